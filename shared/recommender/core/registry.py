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
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from recommender.core.errors import ModelUnavailable, NotFound, VersionUnavailable
from recommender.core.storage import Storage

MANIFEST = "manifest.json"
SAMPLES = "samples.json"  # a model's sample invoices: training writes them, the console's "Try a real basket" reads them
HISTORY_LENGTH = 20


@dataclass(frozen=True)
class Kind:
    """One kind of versioned thing: where its versions and pointers live, and how its errors read."""

    prefix: str                       # storage folder: "models", "feed", "rules"
    noun: str                         # in messages: "model version 2024...", "no earlier feed version"
    none_active: str                  # message when nothing is active; {url} is the storage's URL
    nothing_staged: str               # message when promoting with nothing staged
    error: type[VersionUnavailable]   # raised when a version is missing, damaged or absent

    @property
    def versions(self) -> str:
        return f"{self.prefix}/versions/"

    @property
    def active(self) -> str:
        return f"{self.prefix}/ACTIVE"

    @property
    def staged(self) -> str:
        return f"{self.prefix}/STAGED"


MODELS = Kind("models", "model", "no trained model in {url}: run `make train PATH_TO_DATA=<file>` (or `make demo`)",
              "nothing is staged: run `make train_parallel PATH_TO_DATA=<file>` first", ModelUnavailable)
FEED = Kind("feed", "feed", "no product feed in {url}: run `make catalog PATH_TO_CATALOG=<file>`",
            "no feed is staged", VersionUnavailable)
RULES = Kind("rules", "rules", "no merchandising rules in {url}: run `make rules PATH_TO_RULES=<file>`",
             "no rules are staged", VersionUnavailable)
KINDS = {k.prefix: k for k in (MODELS, FEED, RULES)}

# The models' keys, as they were before other kinds existed.
VERSIONS = MODELS.versions
ACTIVE = MODELS.active
STAGED = MODELS.staged


def utcnow() -> datetime:
    """The current time in UTC (the default clock of everything that stamps versions)."""
    return datetime.now(timezone.utc)


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


def publish_files(storage: Storage, files: dict[str, bytes], info: dict, kind: Kind,
                  now: Callable[[], datetime] = utcnow) -> dict:
    """Write small in-memory artifacts as a new version of kind (manifest last, with their sha256 and info's
    entries); returns the manifest. No pointer moves."""
    artifacts = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    content = hashlib.sha256(json.dumps(artifacts, sort_keys=True).encode()).hexdigest()
    created = now()
    version = new_version_id(created, content)
    manifest = {"version": version, "created_at": created.isoformat(timespec="seconds"), **info,
                "artifacts": artifacts, "content_sha256": content}
    _write_version(storage, version, manifest, files.__getitem__, kind)
    return manifest


def read_manifest(storage: Storage, version: str, kind: Kind = MODELS) -> dict:
    """The manifest of a version; kind.error if the version is missing or unfinished."""
    try:
        return json.loads(storage.read(artifact_key(version, MANIFEST, kind)))
    except NotFound:
        raise kind.error(f"{kind.noun} version {version} is missing or incomplete in {storage.url}") from None
    except json.JSONDecodeError:
        raise kind.error(f"{kind.noun} version {version} has a damaged manifest") from None


def read_pointer(storage: Storage, key: str) -> Pointer | None:
    """The pointer stored at key (ACTIVE or STAGED of some kind), or None when there is none."""
    try:
        raw = json.loads(storage.read(key))
    except NotFound:
        return None
    return Pointer(raw["version"], tuple(raw.get("previous", ())))


def write_pointer(storage: Storage, key: str, pointer: Pointer, stamp: str, now: Callable[[], datetime] = utcnow) -> None:
    """Move the pointer at key in one atomic write; stamp names the time field ("activated_at", "staged_at")."""
    body: dict = {"version": pointer.version}
    if stamp == "activated_at":
        body["previous"] = list(pointer.previous)
    body[stamp] = now().isoformat(timespec="seconds")
    storage.write(key, json.dumps(body, indent=1).encode())


def active(storage: Storage, kind: Kind = MODELS) -> Pointer | None:
    """The active pointer, or None when nothing was ever activated."""
    return read_pointer(storage, kind.active)


def staged(storage: Storage, kind: Kind = MODELS) -> Pointer | None:
    """The staged pointer, or None when nothing waits."""
    return read_pointer(storage, kind.staged)


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
        try:
            path = storage.local_copy(artifact_key(version, name, kind))
        except NotFound:
            raise kind.error(f"{kind.noun} version {version}: artifact {name} is missing") from None
        if sha256_file(path) != expected:
            raise kind.error(f"{kind.noun} version {version}: artifact {name} is damaged (checksum mismatch)")
    return manifest


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


def activate(storage: Storage, version: str, now: Callable[[], datetime] = utcnow, kind: Kind = MODELS) -> Pointer:
    """Point ACTIVE at version (one atomic write), remembering the one it replaces for rollback."""
    read_manifest(storage, version, kind)
    current = active(storage, kind)
    previous: tuple[str, ...] = ()
    if current is not None and current.version != version:
        previous = (current.version, *current.previous)[:HISTORY_LENGTH]
    elif current is not None:
        previous = current.previous
    pointer = Pointer(version, previous)
    write_pointer(storage, kind.active, pointer, "activated_at", now)
    return pointer


def stage(storage: Storage, version: str, now: Callable[[], datetime] = utcnow, kind: Kind = MODELS) -> None:
    """Point STAGED at version; the active one is not touched."""
    read_manifest(storage, version, kind)
    write_pointer(storage, kind.staged, Pointer(version), "staged_at", now)


def promote_staged(storage: Storage, kind: Kind = MODELS) -> str:
    """Activate the staged version after verifying its checksums; refuse when nothing is staged or it is damaged."""
    pointer = staged(storage, kind)
    if pointer is None:
        raise kind.error(kind.nothing_staged)
    verify(storage, pointer.version, kind)
    activate(storage, pointer.version, kind=kind)
    storage.delete(kind.staged)
    return pointer.version


def rollback(storage: Storage, kind: Kind = MODELS) -> str:
    """Re-activate the version that was active before the current one."""
    current = active(storage, kind)
    if current is None:
        raise kind.error(f"no {kind.noun} version is active, nothing to roll back")
    for candidate in current.previous:
        try:
            verify(storage, candidate, kind)
        except VersionUnavailable:
            continue  # pruned or damaged: try the one before
        rest = current.previous[current.previous.index(candidate) + 1:]
        write_pointer(storage, kind.active, Pointer(candidate, rest), "activated_at")
        return candidate
    raise kind.error(f"no earlier {kind.noun} version is available to roll back to")


def list_versions(storage: Storage, kind: Kind = MODELS) -> list[str]:
    """Every version folder of kind in the storage, oldest first (version ids sort by creation time)."""
    return sorted({key[len(kind.versions):].split("/", 1)[0] for key in storage.list(kind.versions)})


def version_time(version: str) -> datetime | None:
    """When a version was created, read from its id (None for a foreign folder name)."""
    try:
        return datetime.strptime(version[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def prune(storage: Storage, keep: int, now: Callable[[], datetime] = utcnow,
          stale_after: timedelta = timedelta(minutes=30), kind: Kind = MODELS) -> list[str]:
    """Delete all but the newest `keep` complete versions, never the active, staged or previous one, and the
    leftovers of killed uploads (no manifest, older than stale_after: younger ones may still be uploading).
    Returns the deleted versions."""
    protected = set()
    for pointer in (active(storage, kind), staged(storage, kind)):
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
