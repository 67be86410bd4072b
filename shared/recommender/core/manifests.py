"""A version's files and its manifest: publishing them (manifest last, so a version is complete or absent), reading
the manifest back checked, and verifying artifacts against their sha256."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from recommender.core.errors import NotFound
from recommender.core.storage import Storage
from recommender.core.version_layout import MANIFEST, MODELS, PLAIN_NAME, Kind, artifact_key, new_version_id, utcnow

# The manifest entries readers rely on: each an object when present.
OBJECT_FIELDS = ("source", "engine", "counts", "params", "period", "model", "evaluation")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
