"""What the console's model panel shows: the served model's manifest figures and every stored version."""

from __future__ import annotations

from functools import lru_cache

from recommender.core import registry
from recommender.core.errors import ModelUnavailable
from recommender.core.storage import Storage
from recommender.serving.model import Model


# Manifests never change once written: each version's summary is read once per process. A version still being
# written raises, and lru_cache keeps no exception, so it is read again next time.
@lru_cache(maxsize=64)
def _summary(storage: Storage, version: str) -> dict:
    manifest = registry.read_manifest(storage, version)
    source = manifest.get("source") or {}
    return {"created_at": manifest.get("created_at"), "items": (manifest.get("counts") or {}).get("items"),
            "source_file": source.get("file"), "evaluation": manifest.get("evaluation")}


def versions(storage: Storage, served: str | None = None) -> list[dict]:
    """Every stored model version, newest first, with the active, staged and served one marked."""
    active, staged = registry.active(storage), registry.staged(storage)
    rows = []
    for version in reversed(registry.list_versions(storage)):
        try:
            row = {"version": version, "complete": True, **_summary(storage, version)}
        except ModelUnavailable:
            created = registry.version_time(version)
            row = {"version": version, "complete": False, "items": None, "source_file": None, "evaluation": None,
                   "created_at": created.isoformat(timespec="seconds") if created else None}
        row["active"] = active is not None and active.version == version
        row["staged"] = staged is not None and staged.version == version
        row["served"] = version == served
        rows.append(row)
    return rows


def describe(model: Model, storage: Storage) -> dict:
    """The served model (version, training time, counts, evaluation) and the list of stored versions."""
    manifest = model.manifest
    active, staged = registry.active(storage), registry.staged(storage)
    return {
        "model_version": model.version,
        "created_at": manifest.get("created_at"),
        "item_count": len(model.catalog),
        "source": manifest.get("source"),
        "counts": manifest.get("counts"),
        "period": manifest.get("period"),
        "evaluation": manifest.get("evaluation"),
        # Confidence is calibrated on held-out baskets when training could hold some out (serving/confidence.py).
        "calibrated": "calibration.json" in manifest.get("artifacts", {}),
        "active_version": active.version if active else None,
        "staged_version": staged.version if staged else None,
        "versions": versions(storage, model.version),
    }
