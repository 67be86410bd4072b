"""What the console's model panel shows: the served model's manifest figures and every stored version."""

from __future__ import annotations

from functools import lru_cache

from recommender.core import registry
from recommender.core.errors import ModelUnavailable
from recommender.core.feed_and_rules import category_key
from recommender.core.storage import Storage
from recommender.serving.merchandising import Policy
from recommender.serving.model import Model
from recommender.serving.schemas import ModelInfoOut, VersionOut

MAX_CATEGORIES = 500


# Manifests never change once written: each version's summary is read once per process. A version still being
# written raises, and lru_cache keeps no exception, so it is read again next time.
@lru_cache(maxsize=64)
def _summary(storage: Storage, version: str) -> dict:
    manifest = registry.read_manifest(storage, version)
    source = manifest.get("source") or {}
    return {
        "created_at": manifest.get("created_at"),
        "items": (manifest.get("counts") or {}).get("items"),
        "source_file": source.get("file"),
        "evaluation": manifest.get("evaluation"),
    }


def versions(storage: Storage, served: str | None = None) -> list[VersionOut]:
    """Every stored model version, newest first, with the active, staged and served one marked."""
    active, staged = registry.active(storage), registry.staged(storage)
    rows = []
    for version in reversed(registry.list_versions(storage)):
        try:
            summary = {"complete": True, **_summary(storage, version)}
        except ModelUnavailable:
            created = registry.version_time(version)
            summary = {
                "complete": False,
                "items": None,
                "source_file": None,
                "evaluation": None,
                "created_at": created.isoformat(timespec="seconds") if created else None,
            }
        rows.append(
            VersionOut(
                version=version,
                **summary,
                active=active is not None and active.version == version,
                staged=staged is not None and staged.version == version,
                served=version == served,
            )
        )
    return rows


# One list per feed as compiled for a model (a policy lives as long as its model, feed and rules versions).
@lru_cache(maxsize=4)
def _categories(policy: Policy) -> tuple[str, ...]:
    found: dict[str, str] = {}
    for attributes in policy.feed_rows.values():
        levels = [level.strip() for level in str(attributes.get("category") or "").split(">") if level.strip()]
        for depth in range(1, len(levels) + 1):
            path = " > ".join(levels[:depth])
            found.setdefault(category_key(path), path)
    return tuple(sorted(found.values(), key=str.casefold)[:MAX_CATEGORIES])


def categories(model: Model) -> list[str]:
    """The feed's categories of the items the model knows, each level's path as the feed spells it ("Home",
    "Home > Kitchen", ...), sorted; what a request's `categories` filter accepts. Empty without a feed."""
    return list(_categories(model.policy)) if model.policy is not None else []


def describe(model: Model, storage: Storage) -> ModelInfoOut:
    """The served model (version, training time, counts, evaluation), the feed and rules it answers with, their
    categories, and the list of stored versions."""
    manifest = model.manifest
    active, staged = registry.active(storage), registry.staged(storage)
    return ModelInfoOut(
        model_version=model.version,
        created_at=manifest.get("created_at"),
        item_count=len(model.items),
        source=manifest.get("source"),
        counts=manifest.get("counts"),
        period=manifest.get("period"),
        evaluation=manifest.get("evaluation"),
        # Confidence is calibrated on held-out baskets when training could hold some out (serving/confidence.py).
        calibrated="calibration.json" in manifest.get("artifacts", {}),
        feed_version=model.feed_version,
        rules_version=model.rules_version,
        categories=categories(model),
        active_version=active.version if active else None,
        staged_version=staged.version if staged else None,
        versions=versions(storage, model.version),
    )
