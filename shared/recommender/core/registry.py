"""Model versions in the storage: publish, stage, activate, roll back, verify and prune.

Layout under the storage root:
    models/versions/<version>/<artifact files>, manifest.json written last
    models/ACTIVE   {"version": ..., "previous": [...], "activated_at": ...}
    models/STAGED   {"version": ..., "staged_at": ...}
A version without a manifest is an unfinished training and is never served; pointer moves are one atomic write.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from recommender.core.errors import ModelUnavailable, NotFound
from recommender.core.storage import Storage

VERSIONS = "models/versions/"
ACTIVE = "models/ACTIVE"
STAGED = "models/STAGED"
MANIFEST = "manifest.json"
HISTORY_LENGTH = 20


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


def artifact_key(version: str, name: str) -> str:
    """Storage key of one artifact of a version."""
    return f"{VERSIONS}{version}/{name}"


def publish(storage: Storage, version: str, folder: Path, manifest: dict) -> None:
    """Copy a trained model's files into the storage, the manifest last, so the version is complete or absent."""
    for name in manifest["artifacts"]:
        storage.write(artifact_key(version, name), (folder / name).read_bytes())
    storage.write(artifact_key(version, MANIFEST), json.dumps(manifest, indent=1).encode())


def read_manifest(storage: Storage, version: str) -> dict:
    """The manifest of a version; ModelUnavailable if the version is missing or unfinished."""
    try:
        return json.loads(storage.read(artifact_key(version, MANIFEST)))
    except NotFound:
        raise ModelUnavailable(f"model version {version} is missing or incomplete in {storage.url}") from None
    except json.JSONDecodeError:
        raise ModelUnavailable(f"model version {version} has a damaged manifest") from None


def _read_pointer(storage: Storage, key: str) -> Pointer | None:
    try:
        raw = json.loads(storage.read(key))
    except NotFound:
        return None
    return Pointer(raw["version"], tuple(raw.get("previous", ())))


def active(storage: Storage) -> Pointer | None:
    """The active pointer, or None before the first training."""
    return _read_pointer(storage, ACTIVE)


def staged(storage: Storage) -> Pointer | None:
    """The staged pointer, or None when nothing waits."""
    return _read_pointer(storage, STAGED)


def active_version(storage: Storage) -> str:
    """The version to serve; ModelUnavailable (saying how to get one) when none is active."""
    pointer = active(storage)
    if pointer is None:
        raise ModelUnavailable(f"no trained model in {storage.url}: run `make train PATH_TO_DATA=<file>` (or `make demo`)")
    return pointer.version


def verify(storage: Storage, version: str) -> dict:
    """The manifest, after checking every artifact against its sha256; ModelUnavailable naming a damaged one."""
    manifest = read_manifest(storage, version)
    for name, expected in manifest["artifacts"].items():
        try:
            path = storage.local_copy(artifact_key(version, name))
        except NotFound:
            raise ModelUnavailable(f"model version {version}: artifact {name} is missing") from None
        if sha256_file(path) != expected:
            raise ModelUnavailable(f"model version {version}: artifact {name} is damaged (checksum mismatch)")
    return manifest


def activate(storage: Storage, version: str, now: Callable[[], datetime] = utcnow) -> Pointer:
    """Point ACTIVE at version (one atomic write), remembering the one it replaces for rollback."""
    read_manifest(storage, version)
    current = active(storage)
    previous: tuple[str, ...] = ()
    if current is not None and current.version != version:
        previous = (current.version, *current.previous)[:HISTORY_LENGTH]
    elif current is not None:
        previous = current.previous
    pointer = Pointer(version, previous)
    body = {"version": version, "previous": list(previous), "activated_at": now().isoformat(timespec="seconds")}
    storage.write(ACTIVE, json.dumps(body, indent=1).encode())
    return pointer


def stage(storage: Storage, version: str, now: Callable[[], datetime] = utcnow) -> None:
    """Point STAGED at version; the active model is not touched."""
    read_manifest(storage, version)
    body = {"version": version, "staged_at": now().isoformat(timespec="seconds")}
    storage.write(STAGED, json.dumps(body, indent=1).encode())


def promote_staged(storage: Storage) -> str:
    """Activate the staged version after verifying its checksums; refuse when nothing is staged or it is damaged."""
    pointer = staged(storage)
    if pointer is None:
        raise ModelUnavailable("nothing is staged: run `make train_parallel PATH_TO_DATA=<file>` first")
    verify(storage, pointer.version)
    activate(storage, pointer.version)
    storage.delete(STAGED)
    return pointer.version


def rollback(storage: Storage) -> str:
    """Re-activate the version that was active before the current one."""
    current = active(storage)
    if current is None:
        raise ModelUnavailable("no model is active, nothing to roll back")
    for candidate in current.previous:
        try:
            verify(storage, candidate)
        except ModelUnavailable:
            continue  # pruned or damaged: try the one before
        rest = current.previous[current.previous.index(candidate) + 1:]
        body = {"version": candidate, "previous": list(rest), "activated_at": utcnow().isoformat(timespec="seconds")}
        storage.write(ACTIVE, json.dumps(body, indent=1).encode())
        return candidate
    raise ModelUnavailable("no earlier model version is available to roll back to")


def list_versions(storage: Storage) -> list[str]:
    """Every version folder in the storage, oldest first (version ids sort by creation time)."""
    return sorted({key[len(VERSIONS):].split("/", 1)[0] for key in storage.list(VERSIONS)})


def version_time(version: str) -> datetime | None:
    """When a version was created, read from its id (None for a foreign folder name)."""
    try:
        return datetime.strptime(version[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def prune(storage: Storage, keep: int, now: Callable[[], datetime] = utcnow,
          stale_after: timedelta = timedelta(minutes=30)) -> list[str]:
    """Delete all but the newest `keep` complete versions, never the active, staged or previous one, and the
    leftovers of killed trainings (no manifest, older than stale_after: younger ones may still be uploading).
    Returns the deleted versions."""
    protected = set()
    for pointer in (active(storage), staged(storage)):
        if pointer is not None:
            protected.add(pointer.version)
            protected.update(pointer.previous[:1])
    versions = list_versions(storage)
    complete = [v for v in versions if storage.list(artifact_key(v, MANIFEST))]
    keep_set = set(complete[-keep:]) | protected
    for v in versions:
        created = version_time(v)
        if v not in complete and (created is None or now() - created < stale_after):
            keep_set.add(v)
    deleted = []
    for version in versions:
        if version in keep_set:
            continue
        for key in storage.list(f"{VERSIONS}{version}/"):
            storage.delete(key)
        deleted.append(version)
    return deleted
