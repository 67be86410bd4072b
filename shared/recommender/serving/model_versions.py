"""The console's Versions page: every model version with a label and its quality in words, which is active and
which staged; promoting, activating and rolling back through the activation gate (serving/gate.py) as `make
promote`, `make activate` and `make rollback` do; and the feed and rules versions, each labelled, activated or
rolled back (as make feed_rollback and make rules_rollback)."""

from __future__ import annotations

from typing import Any

from recommender.core import registry
from recommender.core.errors import (
    Conflict,
    Forbidden,
    ModelRefused,
    ModelUnavailable,
    NotFound,
    PointerDamaged,
    RecommenderError,
    VersionUnavailable,
)
from recommender.core.storage import Storage
from recommender.serving import gate
from recommender.serving.users import User


def _part(manifest: dict, *path: str) -> Any:
    value: Any = manifest
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def quality(manifest: dict) -> str | None:
    """The held-out figure in words: "found the bought item in the top 10 for 32.9% of 1,200 held-out baskets,
    10x better than best-sellers"."""
    hr = _part(manifest, "evaluation", "model", "hr")
    cases = _part(manifest, "evaluation", "cases")
    if not _number(hr) or not _number(cases):
        return None
    text = f"found the bought item in the top 10 for {hr:.1%} of {cases:,} held-out baskets"
    popular = _part(manifest, "evaluation", "popularity", "hr")
    if _number(popular) and popular > 0:
        ratio = hr / popular
        text += f", {ratio:.1f}x as often as best-sellers" if ratio < 10 else f", {ratio:.0f}x as often as best-sellers"
    return text


def describe(storage: Storage, version: str, state: str) -> dict:
    """One model version as the page shows it."""
    entry: dict[str, Any] = {"version": version, "state": state, "created_at": None, "file": None, "first": None}
    entry |= {"last": None, "products": None, "engine": None, "quality": None, "hr": None, "mrr": None}
    entry["problem"] = registry.version_problem(storage, version)
    try:
        manifest = registry.read_manifest(storage, version)
    except RecommenderError as err:
        entry["problem"] = entry["problem"] or err.message
        return entry
    period = manifest.get("period") or {}
    entry |= {
        "created_at": manifest.get("created_at"),
        "file": _part(manifest, "source", "file"),
        "first": period.get("first") if isinstance(period.get("first"), str) else None,
        "last": period.get("last") if isinstance(period.get("last"), str) else None,
        "products": _part(manifest, "counts", "items") if _number(_part(manifest, "counts", "items")) else None,
        "engine": _part(manifest, "engine", "name"),
        "quality": quality(manifest),
        "hr": _part(manifest, "evaluation", "model", "hr"),
        "mrr": _part(manifest, "evaluation", "model", "mrr"),
    }
    return entry


def _pointer(storage: Storage, read: Any, kind: registry.Kind = registry.MODELS) -> registry.Pointer | None:
    try:
        return read(storage, kind)
    except PointerDamaged:
        return None


def listing(storage: Storage) -> dict:
    """Every model version (newest first) with its label, quality and state; the feed and rules versions."""
    active, staged = _pointer(storage, registry.active), _pointer(storage, registry.staged)
    models = []
    for version in sorted(registry.list_versions(storage), reverse=True):
        state = (
            "active"
            if active and active.version == version
            else "staged"
            if staged and staged.version == version
            else ""
        )
        models.append(describe(storage, version, state))
    others, previous = {}, {}
    for kind in (registry.FEED, registry.RULES):
        pointer = _pointer(storage, registry.active, kind)
        previous[kind.prefix] = list(pointer.previous) if pointer else []
        others[kind.prefix] = [
            describe_other(storage, kind, v, "active" if pointer and pointer.version == v else "")
            for v in sorted(registry.list_versions(storage, kind), reverse=True)
        ]
    return {
        "models": models,
        "previous": list(active.previous) if active else [],
        "feeds": others["feed"],
        "rules": others["rules"],
        "feeds_previous": previous["feed"],
        "rules_previous": previous["rules"],
    }


# --- feed and rules versions ---------------------------------------------------------------------------------
KINDS = {"feed": registry.FEED, "rules": registry.RULES}


def describe_other(storage: Storage, kind: registry.Kind, version: str, state: str) -> dict:
    """One feed or rules version as the page shows it: made when, from which file, and what it holds."""
    entry: dict[str, Any] = {"version": version, "state": state, "created_at": None, "file": None, "label": None}
    entry["problem"] = registry.version_problem(storage, version, kind)
    try:
        manifest = registry.read_manifest(storage, version, kind)
    except RecommenderError as err:
        entry["problem"] = entry["problem"] or err.message
        return entry
    entry["created_at"] = manifest.get("created_at")
    entry["file"] = _part(manifest, "source", "file")
    items = _part(manifest, "counts", "items")
    if kind is registry.FEED and _number(items):
        entry["label"] = f"{items:,} products"
    warnings = manifest.get("warnings")
    if kind is registry.RULES and isinstance(warnings, list):
        entry["label"] = f"{len(warnings)} warning(s) when published" if warnings else "published without warnings"
    return entry


def activate_other(storage: Storage, kind_name: str, name: str) -> dict:
    """Make a stored feed or rules version (or a unique beginning of its name) the one in force, remembering
    the one it replaces for roll back; serving follows within MODEL_POLL_SECONDS."""
    kind = KINDS[kind_name]
    try:
        version = registry.find_version(storage, name, kind)
    except VersionUnavailable:
        raise NotFound(f"no {kind.noun} version {name!r}: the Versions page lists them") from None
    try:
        registry.verify(storage, version, kind)
    except VersionUnavailable as err:
        raise Conflict(f"{err.message}: it cannot be activated") from None
    active = _pointer(storage, registry.active, kind)
    if active is not None and active.version == version:
        return {"version": version, "summary": [f"{kind.noun} version {version} is in force already"]}
    registry.activate(storage, version, kind=kind, notify=lambda _message: None)
    return {"version": version, "summary": [f"{kind.noun} version {version} is in force"]}


def _gated(storage: Storage, version: str, force: bool, user: User, margin: float, label: str) -> str | None:
    """The gate's comparison of version with the active model (None when there was nothing to compare); a refusal
    is ModelRefused, unless force, which needs the right to force."""
    if force and not user.may("force"):
        raise Forbidden(
            f"the right 'force' (activate a model version the activation gate refuses) is missing: user "
            f"{user.username!r} is a {user.role}; an admin can do it"
        )
    lines: list[str] = []
    comparison = gate.check(storage, version, force, margin, lines.append, label=label)
    if comparison is not None:
        return comparison.describe()
    return "; ".join(lines) or None


def promote(storage: Storage, user: User, force: bool, margin: float) -> dict:
    """Activate the staged model after the gate's comparison (as make promote)."""
    pointer = _pointer(storage, registry.staged)
    comparison = None
    if pointer is None and not storage.list(registry.MODELS.staged):
        raise Conflict("no model version is staged: `make train_parallel` stages one")
    if pointer is not None:
        try:
            comparison = _gated(storage, pointer.version, force, user, margin, "the staged model")
        except ModelRefused as err:
            raise ModelRefused(f"{err.message}. It stays staged; an admin may promote it anyway") from None
    version = registry.promote_staged(storage, notify=lambda _message: None)
    return {"version": version, "comparison": comparison}


def activate(storage: Storage, user: User, name: str, force: bool, margin: float) -> dict:
    """Activate a stored model version after the gate's comparison (as make activate)."""
    try:
        version = registry.find_version(storage, name)
    except ModelUnavailable:
        raise NotFound(f"no model version {name!r}: the Versions page lists them") from None
    registry.verify(storage, version)
    active = _pointer(storage, registry.active)
    if active is not None and active.version == version:
        return {"version": version, "comparison": "it is the active version already"}
    try:
        comparison = _gated(storage, version, force, user, margin, "the chosen model")
    except ModelRefused as err:
        raise ModelRefused(f"{err.message}. Nothing changed; an admin may activate it anyway") from None
    registry.activate(storage, version)
    registry.unstage(storage, version)
    return {"version": version, "comparison": comparison}


def roll_back(storage: Storage) -> dict:
    """Re-activate the model version active before the current one (as make rollback)."""
    active = _pointer(storage, registry.active)
    if active is None or not active.previous:
        raise Conflict("there is no earlier model version to roll back to")
    return {"version": registry.rollback(storage, notify=lambda _message: None), "comparison": None}
