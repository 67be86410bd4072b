"""Versions in the storage, for every kind of versioned thing (models, the product feed, the merchandising rules):
publish, stage, activate, roll back, verify, list and prune, with the same pointer code for each kind.

Layout under the storage root, for each kind (prefix `models`, `feed` or `rules`):
    <prefix>/versions/<version>/<artifact files>, manifest.json written last
    <prefix>/ACTIVE   {"version": ..., "previous": [...], "activated_at": ...}
    <prefix>/STAGED   {"version": ..., "staged_at": ...}
A version without a manifest is unfinished and is never served; pointer moves are one atomic write.
Every function takes the kind as its last argument, models by default.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from recommender.core.errors import (
    Conflict,
    InvalidInput,
    ModelUnavailable,
    NotFound,
    PointerDamaged,
    VersionUnavailable,
)
from recommender.core.storage import Storage

MANIFEST = "manifest.json"
SAMPLES = (
    "samples.json"  # a model's sample invoices: training writes them, the console's "Try a real basket" reads them
)
HISTORY_LENGTH = 20
# Compare-and-swap rounds a pointer move tries before it gives up. A round is lost only when another command's move
# succeeded meanwhile, so this many commands at once can all get through.
MOVE_ATTEMPTS = 50


@dataclass(frozen=True)
class Kind:
    """One kind of versioned thing: where its versions and pointers live, and how its errors read."""

    prefix: str  # storage folder: "models", "feed", "rules"
    noun: str  # in messages: "model version 2024...", "no earlier feed version"
    none_active: str  # message when nothing is active; {url} is the storage's URL
    nothing_staged: str  # message when promoting with nothing staged
    error: type[VersionUnavailable]  # raised when a version is missing, damaged or absent

    @property
    def versions(self) -> str:
        return f"{self.prefix}/versions/"

    @property
    def active(self) -> str:
        return f"{self.prefix}/ACTIVE"

    @property
    def staged(self) -> str:
        return f"{self.prefix}/STAGED"


MODELS = Kind(
    "models",
    "model",
    "no trained model in {url}: run `make train PATH_TO_DATA=<file>` (or `make demo`)",
    "nothing is staged: run `make train_parallel PATH_TO_DATA=<file>` first",
    ModelUnavailable,
)
FEED = Kind(
    "feed",
    "feed",
    "no product feed in {url}: run `make feed PATH_TO_FEED=<file>`",
    "no feed is staged",
    VersionUnavailable,
)
RULES = Kind(
    "rules",
    "rules",
    "no merchandising rules in {url}: run `make rules PATH_TO_RULES=<file>`",
    "no rules are staged",
    VersionUnavailable,
)
KINDS = {k.prefix: k for k in (MODELS, FEED, RULES)}

# The models' keys, as they were before other kinds existed.
VERSIONS = MODELS.versions
ACTIVE = MODELS.active
STAGED = MODELS.staged


def utcnow() -> datetime:
    """The current time in UTC (the default clock of everything that stamps versions)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Pointer:
    """Which version a pointer names, and the versions it named before (newest first)."""

    version: str
    previous: tuple[str, ...] = ()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_version_id(now: datetime, content_hash: str) -> str:
    """Sortable by creation time (to the millisecond), then the content hash and a random tail for uniqueness."""
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{content_hash[:8]}{secrets.token_hex(2)}"


def artifact_key(version: str, name: str, kind: Kind = MODELS) -> str:
    """Storage key of one artifact of a version."""
    return f"{kind.versions}{version}/{name}"


def publish(storage: Storage, version: str, folder: Path, manifest: dict, kind: Kind = MODELS) -> None:
    """Copy a version's files into the storage, the manifest last, so the version is complete or absent."""
    _write_version(storage, version, manifest, lambda name: (folder / name).read_bytes(), kind)


def _write_version(storage: Storage, version: str, manifest: dict, content: Callable[[str], bytes], kind: Kind) -> None:
    """Every artifact of the manifest, then the manifest; on any failure, what was written is deleted again."""
    keys = [artifact_key(version, name, kind) for name in manifest["artifacts"]]
    manifest_key = artifact_key(version, MANIFEST, kind)
    try:
        for name, key in zip(manifest["artifacts"], keys):
            storage.write(key, content(name))
        storage.write(manifest_key, json.dumps(manifest, indent=1).encode())
    except BaseException:
        discard(storage, [manifest_key, *keys])
        raise


def discard(storage: Storage, keys: list[str]) -> None:
    """Delete what a failed publication may have written, in order (the manifest first: the version is then
    incomplete before any artifact goes); best effort, since the storage may be what failed. Leftovers carry no
    manifest, are never served, and prune removes them later."""
    for key in keys:
        try:
            storage.delete(key)
        except Exception:  # noqa: BLE001 - the publication's own error is the one to report
            continue


def publish_files(
    storage: Storage, files: dict[str, bytes], info: dict, kind: Kind, now: Callable[[], datetime] = utcnow
) -> dict:
    """Write small in-memory artifacts as a new version of kind (manifest last, with their sha256 and info's
    entries); returns the manifest. No pointer moves."""
    artifacts = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    content = hashlib.sha256(json.dumps(artifacts, sort_keys=True).encode()).hexdigest()
    created = now()
    version = new_version_id(created, content)
    manifest = {
        "version": version,
        "created_at": created.isoformat(timespec="seconds"),
        **info,
        "artifacts": artifacts,
        "content_sha256": content,
    }
    _write_version(storage, version, manifest, files.__getitem__, kind)
    return manifest


# A version id or an artifact name is one plain file name: a manifest or pointer naming "../x" is damaged, never a
# path out of the version's folder.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# The manifest entries readers rely on: each an object when present.
OBJECT_FIELDS = ("source", "engine", "counts", "params", "period", "model", "evaluation")


def parse_manifest(data: bytes) -> dict:
    """A manifest's content, checked for the shape every reader relies on (an object whose `artifacts` map plain
    file names to hashes, its other sections objects); ValueError saying what is wrong otherwise."""
    try:
        raw = json.loads(data)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(raw, dict):
        raise ValueError(f"a JSON {type(raw).__name__}, not an object")
    artifacts = raw.get("artifacts")
    if not isinstance(artifacts, dict) or not all(isinstance(h, str) for h in artifacts.values()):
        raise ValueError("no list of artifacts with their hashes")
    for name in artifacts:
        if not PLAIN_NAME.fullmatch(name):
            raise ValueError(f"artifact name {name[:60]!r} is not a plain file name")
    for field in OBJECT_FIELDS:
        if raw.get(field) is not None and not isinstance(raw[field], dict):
            raise ValueError(f"its {field} is not an object")
    return raw


def read_manifest(storage: Storage, version: str, kind: Kind = MODELS) -> dict:
    """The manifest of a version; kind.error if the version is missing, unfinished or its manifest damaged."""
    if not PLAIN_NAME.fullmatch(version):
        raise kind.error(f"{kind.noun} version {version[:60]!r} is not a version name")
    try:
        return parse_manifest(storage.read(artifact_key(version, MANIFEST, kind)))
    except NotFound:
        raise kind.error(f"{kind.noun} version {version} is missing or incomplete in {storage.url}") from None
    except ValueError as err:
        raise kind.error(f"{kind.noun} version {version} has a damaged manifest ({err})") from None


def read_pointer(storage: Storage, key: str, kind: Kind = MODELS) -> Pointer | None:
    """The pointer stored at key (ACTIVE or STAGED of some kind), or None when there is none; PointerDamaged
    (saying how to repair it) when the key holds something else."""
    try:
        return _parse_pointer(storage.read(key), storage, key, kind)
    except NotFound:
        return None


def _parse_pointer(data: bytes, storage: Storage, key: str, kind: Kind) -> Pointer:
    try:
        raw = json.loads(data)
        version, previous = raw["version"], raw.get("previous", [])
        if (
            not isinstance(version, str)
            or not PLAIN_NAME.fullmatch(version)
            or not isinstance(previous, list)
            or not all(isinstance(v, str) and PLAIN_NAME.fullmatch(v) for v in previous)
        ):
            raise ValueError(key)
    except (ValueError, KeyError, TypeError, AttributeError):
        what = "empty" if not data.strip() else "not a pointer"
        fix = kind.none_active.format(url=storage.url).split(": ", 1)[-1]
        raise PointerDamaged(f"{key} in {storage.url} is damaged ({what}): {fix} to write a new one") from None
    return Pointer(version, tuple(previous))


def note(message: str) -> None:
    """Tell the operator something they should know about a pointer move (on stderr, as one line)."""
    print(f"note: {message}", file=sys.stderr)


def move_pointer(
    storage: Storage,
    key: str,
    decide: Callable[[Pointer | None], Pointer],
    stamp: str,
    now: Callable[[], datetime] = utcnow,
    kind: Kind = MODELS,
    notify: Callable[[str], None] = note,
) -> Pointer:
    """Set the pointer at key to decide(current pointer), as a compare-and-swap: the write applies only if the
    pointer is still what decide saw (an S3 conditional write, or a lock and an atomic rename on disk). When another
    command moved it in between, decide is asked again with the new one (it may raise to give up), so no command's
    move, and no version of the rollback history, is ever lost. A damaged pointer counts as none, and is replaced.
    stamp names the time field ("activated_at", "staged_at")."""
    written, pointer = None, None
    for _ in range(MOVE_ATTEMPTS):
        damaged = False
        try:
            data, tag = storage.read_tagged(key)
        except NotFound:
            data, tag, current = None, None, None
        else:
            if data == written and pointer is not None:
                return pointer  # the previous round went through, though its answer was lost (and retried: 412)
            try:
                current = _parse_pointer(data, storage, key, kind)
            except PointerDamaged:
                damaged, current = True, None
        pointer = decide(current)
        body: dict = {"version": pointer.version}
        if stamp == "activated_at":
            body["previous"] = list(pointer.previous)
        body[stamp] = now().isoformat(timespec="seconds")
        written = json.dumps(body, indent=1).encode()
        if storage.write_if(key, written, tag):
            if damaged:
                notify(
                    f"{key} in {storage.url} was damaged and is replaced; the {kind.noun} versions it named "
                    f"before are no longer in the rollback history"
                )
            return pointer
    raise Conflict(
        f"{key} in {storage.url} kept changing while this command tried to move it; it changed nothing: try again"
    )


def write_pointer(
    storage: Storage, key: str, pointer: Pointer, stamp: str, now: Callable[[], datetime] = utcnow, kind: Kind = MODELS
) -> None:
    """Set the pointer at key to exactly pointer, whatever it named before (through move_pointer's compare-and-swap,
    so it never slips between another command's read and write)."""
    move_pointer(storage, key, lambda _current: pointer, stamp, now, kind)


def active(storage: Storage, kind: Kind = MODELS) -> Pointer | None:
    """The active pointer, or None when nothing was ever activated."""
    return read_pointer(storage, kind.active, kind)


def staged(storage: Storage, kind: Kind = MODELS) -> Pointer | None:
    """The staged pointer, or None when nothing waits."""
    return read_pointer(storage, kind.staged, kind)


def active_version(storage: Storage, kind: Kind = MODELS) -> str:
    """The version to serve; kind.error (saying how to get one) when none is active."""
    pointer = active(storage, kind)
    if pointer is None:
        raise kind.error(kind.none_active.format(url=storage.url))
    return pointer.version


def verify(storage: Storage, version: str, kind: Kind = MODELS) -> dict:
    """The manifest, after checking every artifact against its sha256; kind.error naming a damaged one."""
    manifest = read_manifest(storage, version, kind)
    for name, expected in manifest["artifacts"].items():
        key = artifact_key(version, name, kind)
        try:
            path = storage.local_copy(key)
            if sha256_file(path) != expected:
                # The local copy (S3's cache) may be what is damaged: fetch it again before blaming the version.
                path = storage.local_copy(key, fresh=True)
        except NotFound:
            raise kind.error(f"{kind.noun} version {version}: artifact {name} is missing") from None
        if sha256_file(path) != expected:
            raise kind.error(f"{kind.noun} version {version}: artifact {name} is damaged (checksum mismatch)")
    return manifest


def version_problem(storage: Storage, version: str, kind: Kind = MODELS) -> str | None:
    """Why a version cannot be activated, found without loading it (sha256 from the storage's own checksums
    where it keeps them): "incomplete, ..." or "damaged: ..."; None when it is whole."""
    if not PLAIN_NAME.fullmatch(version):
        return "damaged: not a version name"
    try:
        artifacts = parse_manifest(storage.read(artifact_key(version, MANIFEST, kind)))["artifacts"].items()
    except NotFound:
        return "incomplete, no manifest: being published, or killed while it was"
    except ValueError as err:
        return f"damaged: unreadable manifest ({err})"
    for name, expected in artifacts:
        try:
            if storage.sha256(artifact_key(version, name, kind)) != expected:
                return f"damaged: {name} fails its checksum"
        except NotFound:
            return f"damaged: {name} is missing"
    return None


def read_verified(storage: Storage, version: str, name: str, kind: Kind) -> bytes:
    """One artifact's bytes, read straight from the storage (no local copy) and checked against the manifest."""
    manifest = read_manifest(storage, version, kind)
    expected = manifest["artifacts"].get(name)
    if expected is None:
        raise kind.error(f"{kind.noun} version {version} has no artifact {name}")
    try:
        data = storage.read(artifact_key(version, name, kind))
    except NotFound:
        raise kind.error(f"{kind.noun} version {version}: artifact {name} is missing") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise kind.error(f"{kind.noun} version {version}: artifact {name} is damaged (checksum mismatch)")
    return data


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
    pointer = _parse_pointer(data, storage, kind.staged, kind)
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
        pointer = _parse_pointer(data, storage, kind.staged, kind)
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


def list_versions(storage: Storage, kind: Kind = MODELS) -> list[str]:
    """Every version folder of kind in the storage, oldest first (version ids sort by creation time)."""
    return sorted({key[len(kind.versions) :].split("/", 1)[0] for key in storage.list(kind.versions)})


def version_time(version: str) -> datetime | None:
    """When a version was created, read from its id (None for a foreign folder name)."""
    try:
        return datetime.strptime(version[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


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
