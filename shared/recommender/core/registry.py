"""Versions in the storage, for every kind of versioned thing (models, the product feed, the merchandising rules):
publish, stage, activate, roll back, verify, list and prune, with the same pointer code for each kind.

Layout under the storage root, for each kind (prefix `models`, `feed` or `rules`):
    <prefix>/versions/<version>/<artifact files>, manifest.json written last
    <prefix>/ACTIVE   {"version": ..., "previous": [...], "activated_at": ...}
    <prefix>/STAGED   {"version": ..., "staged_at": ...}
A version without a manifest is unfinished and is never served; pointer moves are one atomic write.
Every function takes the kind as its last argument, models by default.

This module holds the commands over versions (activate, stage, promote, roll back, prune) and is the one place
callers import the registry from: the layout and version ids (core.version_layout), manifests and checksums
(core.manifests) and the pointers' compare-and-swap (core.pointers) are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta

from recommender.core.errors import Conflict, InvalidInput, NotFound, PointerDamaged, VersionUnavailable
from recommender.core.manifests import (
    publish,
    publish_files,
    read_manifest,
    read_verified,
    sha256_file,
    verify,
    version_problem,
)
from recommender.core.pointers import (
    Pointer,
    active,
    active_version,
    move_pointer,
    note,
    parse_pointer,
    read_pointer,
    staged,
    write_pointer,
)
from recommender.core.storage import Storage
from recommender.core.version_layout import (
    ACTIVE,
    FEED,
    KINDS,
    MANIFEST,
    MODELS,
    RULES,
    SAMPLES,
    STAGED,
    VERSIONS,
    Kind,
    artifact_key,
    list_versions,
    new_version_id,
    utcnow,
    version_time,
)

__all__ = [
    "ACTIVE",
    "FEED",
    "HISTORY_LENGTH",
    "KINDS",
    "MANIFEST",
    "MODELS",
    "RULES",
    "SAMPLES",
    "STAGED",
    "VERSIONS",
    "Kind",
    "Pointer",
    "activate",
    "active",
    "active_version",
    "artifact_key",
    "find_version",
    "list_versions",
    "new_version_id",
    "promote_staged",
    "prune",
    "publish",
    "publish_files",
    "read_manifest",
    "read_pointer",
    "read_verified",
    "rollback",
    "sha256_file",
    "stage",
    "staged",
    "unstage",
    "utcnow",
    "verify",
    "version_problem",
    "version_time",
    "write_pointer",
]

HISTORY_LENGTH = 20


def activate(
    storage: Storage,
    version: str,
    now: Callable[[], datetime] = utcnow,
    kind: Kind = MODELS,
    notify: Callable[[str], None] = note,
) -> Pointer:
    """Point ACTIVE at version, remembering the one it replaces for rollback. When another command activated a
    version between this one's read and write, that version goes into the history below this one, and notify
    says so."""
    read_manifest(storage, version, kind)
    seen: list[Pointer | None] = []

    def decide(current: Pointer | None) -> Pointer:
        seen.append(current)
        if current is None:
            return Pointer(version)
        if current.version == version:
            return Pointer(version, current.previous)
        return Pointer(version, (current.version, *current.previous)[:HISTORY_LENGTH])

    pointer = move_pointer(storage, kind.active, decide, "activated_at", now, kind, notify)
    if seen[-1] != seen[0] and seen[-1] is not None and seen[-1].version != version:
        notify(
            f"another command activated {kind.noun} version {seen[-1].version} meanwhile; {version} replaced it "
            f"and `rollback` returns to it"
        )
    return pointer


def stage(
    storage: Storage,
    version: str,
    now: Callable[[], datetime] = utcnow,
    kind: Kind = MODELS,
    notify: Callable[[str], None] = note,
) -> None:
    """Point STAGED at version; the active one is not touched."""
    read_manifest(storage, version, kind)
    seen: list[Pointer | None] = []

    def decide(current: Pointer | None) -> Pointer:
        seen.append(current)
        return Pointer(version)

    move_pointer(storage, kind.staged, decide, "staged_at", now, kind, notify)
    if seen[-1] != seen[0] and seen[-1] is not None and seen[-1].version != version:
        notify(
            f"another command staged {kind.noun} version {seen[-1].version} meanwhile; {version} replaced it "
            f"(the other version stays listed)"
        )


def promote_staged(storage: Storage, kind: Kind = MODELS, notify: Callable[[str], None] = note) -> str:
    """Activate the staged version after verifying its checksums; refuse when nothing is staged or it is damaged.
    STAGED is cleared only if it still names that version: one staged meanwhile stays staged."""
    try:
        data, tag = storage.read_tagged(kind.staged)
    except NotFound:
        raise kind.error(kind.nothing_staged) from None
    pointer = parse_pointer(data, storage, kind.staged, kind)
    verify(storage, pointer.version, kind)
    activate(storage, pointer.version, kind=kind, notify=notify)
    if not storage.delete_if(kind.staged, tag):
        try:
            newer = staged(storage, kind)
        except PointerDamaged:
            newer = None
        if newer is not None and newer.version != pointer.version:
            notify(f"{kind.noun} version {newer.version} was staged meanwhile and stays staged")
    return pointer.version


def find_version(storage: Storage, name: str, kind: Kind = MODELS) -> str:
    """The stored version named by name, or by a unique beginning of it; kind.error when none is, InvalidInput
    when several are."""
    versions = list_versions(storage, kind)
    if name in versions:
        return name
    matches = [v for v in versions if name and v.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InvalidInput(f"{name!r} begins {len(matches)} {kind.noun} versions ({_listed(matches)}): give more of it")
    raise kind.error(f"no {kind.noun} version {name!r} in {storage.url}: `make versions` lists them")


def unstage(storage: Storage, version: str, kind: Kind = MODELS) -> bool:
    """Clear STAGED if it names version (conditionally: one staged meanwhile stays); whether it did."""
    try:
        data, tag = storage.read_tagged(kind.staged)
        pointer = parse_pointer(data, storage, kind.staged, kind)
    except (NotFound, PointerDamaged):
        return False
    return pointer.version == version and storage.delete_if(kind.staged, tag)


def rollback(storage: Storage, kind: Kind = MODELS, notify: Callable[[str], None] = note) -> str:
    """Re-activate the version that was active before the current one. If another command moves the pointer
    meanwhile, nothing is rolled back (Conflict): undoing a version nobody has looked at would be a surprise."""
    current = active(storage, kind)
    if current is None:
        raise kind.error(f"no {kind.noun} version is active, nothing to roll back")
    skipped: list[str] = []
    for candidate in current.previous:
        try:
            verify(storage, candidate, kind)
        except VersionUnavailable as err:
            skipped.append(err.message)  # pruned or damaged: try the one before, and say why
            continue
        if skipped:
            notify(f"rolled back past what cannot be re-activated: {_listed(skipped)}")
        target = Pointer(candidate, current.previous[current.previous.index(candidate) + 1 :])

        def decide(now_current: Pointer | None) -> Pointer:
            if now_current != current:
                moved = now_current.version if now_current else "nothing"
                raise Conflict(
                    f"the active {kind.noun} version changed while rolling back (another command made "
                    f"{moved} active): nothing was rolled back; roll back again to undo that one"
                )
            return target  # noqa: B023 (decide runs inside move_pointer below, in this iteration)

        move_pointer(storage, kind.active, decide, "activated_at", utcnow, kind, notify)
        return candidate
    # The versions in force are fine; what is asked cannot be done in this state (409, not "unavailable").
    if skipped:
        raise Conflict(f"cannot roll back, nothing changed: {_listed(skipped)}")
    raise Conflict(f"no earlier {kind.noun} version is available to roll back to")


def _listed(problems: list[str], shown: int = 3) -> str:
    """The first few problems, then how many more (a history holds up to HISTORY_LENGTH versions)."""
    more = f"; and {len(problems) - shown} earlier one(s) unusable too" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def prune(
    storage: Storage,
    keep: int,
    now: Callable[[], datetime] = utcnow,
    stale_after: timedelta = timedelta(minutes=30),
    kind: Kind = MODELS,
    in_use: Collection[str] = (),
) -> list[str]:
    """Delete all but the newest `keep` complete versions, never the active, staged or previous one nor those in_use
    (a running experiment's), and the leftovers of killed uploads (no manifest, older than stale_after: younger ones
    may still be uploading). Returns the deleted versions."""
    protected = set(in_use)
    for read in (active, staged):
        try:
            pointer = read(storage, kind)
        except PointerDamaged:
            continue  # it protects nothing; reporting it is the business of the commands that read it
        if pointer is not None:
            protected.add(pointer.version)
            protected.update(pointer.previous[:1])
    versions = list_versions(storage, kind)
    complete = [v for v in versions if storage.list(artifact_key(v, MANIFEST, kind))]
    keep_set = set(complete[-keep:]) | protected
    for v in versions:
        created = version_time(v)
        if v not in complete and (created is None or now() - created < stale_after):
            keep_set.add(v)
    deleted = []
    for version in versions:
        if version in keep_set:
            continue
        for key in storage.list(f"{kind.versions}{version}/"):
            storage.delete(key)
        deleted.append(version)
    return deleted
