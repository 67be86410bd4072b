"""Where training data comes from: one file, a folder of parts, or the same under s3://; both engines list it here.

A source is resolved once into its parts (files in a fixed order: the order that decides "the latest description"
and ties of popularity), then each part is read on its own: by the single-machine trainer one after the other, by
Spark one task per part. S3 objects are fetched with boto3, with the credentials and AWS_ENDPOINT_URL the storage
uses, so the S3 emulator works and no Hadoop S3 connector is needed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recommender.core.errors import DataFileError
from recommender.core.extras import optional

KINDS = (".csv.gz", ".csv", ".parquet", ".xlsx")
PART_KINDS = (".csv", ".csv.gz", ".parquet")  # what a folder of parts may hold (csv and csv.gz may mix)


@dataclass(frozen=True)
class Part:
    """One file of a source: a local path or an s3://bucket/key, its kind, size and a content tag."""

    location: str
    name: str  # what error messages call it: the file name, or its path inside the folder
    kind: str
    size: int
    tag: str = ""  # S3 ETag; local parts are hashed when the manifest needs it


@dataclass(frozen=True)
class Source:
    """A resolved training input: what the user named, and its parts in reading order."""

    location: str
    name: str
    parts: tuple[Part, ...]
    folder: bool

    @property
    def kind(self) -> str:
        """The kind of the parts (.csv and .csv.gz count as one)."""
        kinds = {p.kind for p in self.parts}
        return ".parquet" if ".parquet" in kinds else ".xlsx" if ".xlsx" in kinds else ".csv"

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)


def kind_of(name: str) -> str | None:
    """'.csv', '.csv.gz', '.parquet' or '.xlsx' from a file name, else None."""
    lower = name.lower()
    for suffix in KINDS:
        if lower.endswith(suffix):
            return suffix
    if lower.endswith(".parq") or lower.endswith(".pq"):
        return ".parquet"
    return None


def file_kind(path: Path) -> str:
    """The kind of a file from its name; DataFileError for anything unsupported."""
    kind = kind_of(path.name)
    if kind is None:
        suffix = "".join(path.suffixes) or "(none)"
        raise DataFileError(
            f"unsupported file type {suffix} for {path.name}: use .csv, .csv.gz, .xlsx or .parquet "
            "(or a folder of .csv / .parquet parts)"
        )
    return kind


def _hidden(relative: str) -> bool:
    # Spark and Hadoop leave _SUCCESS, _metadata, .crc files beside the parts they write.
    return any(piece.startswith((".", "_")) for piece in relative.split("/"))


def _folder_parts(listing: list[tuple[str, str, int, str]], where: str) -> tuple[Part, ...]:
    """Parts from (relative name, location, size, tag) of every file under a folder, checked and sorted by name."""
    parts = []
    for relative, location, size, tag in sorted(listing):
        if _hidden(relative):
            continue
        kind = kind_of(relative)
        if kind not in PART_KINDS:
            raise DataFileError(
                f"{where} holds {relative}: a folder of parts may hold only .csv, .csv.gz or .parquet files"
            )
        parts.append(Part(location, relative, kind, size, tag))
    if not parts:
        raise DataFileError(f"no .csv, .csv.gz or .parquet parts in {where}")
    if len({p.kind == ".parquet" for p in parts}) > 1:
        raise DataFileError(f"{where} mixes csv and Parquet parts; use one format")
    return tuple(parts)


EVENTS_KIND = "events"  # the recorded purchases of an event log (training/event_tables.py), read as one part


def resolve(location: str | os.PathLike[str], s3_client: Callable[[], Any] | None = None) -> Source:
    """The parts of a file, folder or s3:// location, of the event log (events: or events:<storage url>), or of
    several of these joined by commas with the event log among them; DataFileError when there is nothing usable."""
    from recommender.training import event_tables

    text = os.fspath(location)
    pieces = event_tables.split_sources(text)
    if len(pieces) > 1:
        sources = [resolve(piece, s3_client) for piece in pieces]
        parts = tuple(part for source in sources for part in source.parts)
        return Source(text, ", ".join(source.name for source in sources), parts, folder=True)
    if event_tables.is_events(text):
        storage = event_tables.open_log(text)
        listing = event_tables.list_log(storage)
        tag = event_tables.fingerprint(storage, listing)
        return Source(text, "events", (Part(text, f"events of {storage.url}", EVENTS_KIND, 0, tag),), folder=True)
    if text.startswith("s3://") or text.startswith("s3a://"):
        return _resolve_s3(text, s3_client or default_s3_client())
    if "://" in text:
        raise DataFileError(f"{text}: give a local path or s3://bucket/key")
    path = Path(text)
    if path.is_dir():
        listing = [
            (p.relative_to(path).as_posix(), str(p), p.stat().st_size, "") for p in path.rglob("*") if p.is_file()
        ]
        return Source(text, path.name, _folder_parts(listing, f"folder {path.name}"), folder=True)
    kind = file_kind(path)
    if not path.exists():
        raise DataFileError(f"file not found: {path}")
    if not path.is_file():
        raise DataFileError(f"not a file: {path}")
    return Source(text, path.name, (Part(str(path), path.name, kind, path.stat().st_size),), folder=False)


def split_s3(url: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key (s3a:// accepted)."""
    rest = url.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise DataFileError(f"{url} names no bucket; use s3://bucket/key")
    return bucket, key


def default_s3_client(endpoint_url: str | None = None) -> Callable[[], Any]:
    """A factory of boto3 S3 clients for AWS_ENDPOINT_URL (or endpoint_url), as the storage makes them."""
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None

    def make() -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=endpoint)

    return make


def _s3_failure(url: str, err: Exception) -> DataFileError:
    detail = getattr(err, "response", {}).get("Error", {}) if hasattr(err, "response") else {}
    code = detail.get("Code") if detail else None
    if code in ("NoSuchBucket",):
        return DataFileError(f"cannot read {url}: bucket {split_s3(url)[0]} does not exist")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return DataFileError(f"cannot read {url}: access denied ({code})")
    return DataFileError(f"cannot read {url}: {err}")


def _resolve_s3(url: str, make_client: Callable[[], Any]) -> Source:
    optional("boto3", "s3:// input")  # botocore comes with it
    from botocore.exceptions import BotoCoreError, ClientError

    url = "s3://" + url.split("://", 1)[1]
    bucket, key = split_s3(url)
    client = make_client()
    name = key.rstrip("/").rsplit("/", 1)[-1] or bucket
    try:
        if key and not key.endswith("/"):
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                part = Part(url, name, file_kind(Path(name)), int(head["ContentLength"]), head.get("ETag", ""))
                return Source(url, name, (part,), folder=False)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
        prefix = key.rstrip("/") + "/" if key else ""
        listing = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):
                    continue  # folder markers some tools write
                listing.append(
                    (obj["Key"][len(prefix) :], f"s3://{bucket}/{obj['Key']}", int(obj["Size"]), obj.get("ETag", ""))
                )
    except (ClientError, BotoCoreError) as err:
        raise _s3_failure(url, err) from None
    if not listing:
        raise DataFileError(f"file not found: {url} (no object and no parts under it)")
    return Source(url, name, _folder_parts(listing, url), folder=True)


@contextmanager
def local_file(part: Part, make_client: Callable[[], Any] | None = None) -> Iterator[Path]:
    """A local path holding the part: the file itself, or a temporary download of an S3 object."""
    if not part.location.startswith("s3://"):
        yield Path(part.location)
        return
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(part.location)
    folder = tempfile.mkdtemp(prefix="recommender-part-")
    try:
        target = Path(folder) / Path(part.name).name
        try:
            (make_client or default_s3_client())().download_file(bucket, key, str(target))
        except (ClientError, BotoCoreError) as err:
            raise _s3_failure(part.location, err) from None
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fingerprint(source: Source) -> dict:
    """What the manifest records of the input: name, bytes and sha256 (of the file; for several parts, of their
    names, sizes and contents' hashes, S3 ETags standing in for the contents)."""
    if not source.folder and not source.parts[0].location.startswith("s3://"):
        from recommender.core.registry import sha256_file

        part = source.parts[0]
        return {"file": source.name, "sha256": sha256_file(Path(part.location)), "bytes": part.size}
    digest = hashlib.sha256()
    for part in source.parts:
        tag = part.tag
        if not tag:
            from recommender.core.registry import sha256_file

            tag = sha256_file(Path(part.location))
        digest.update(f"{part.name}\t{part.size}\t{tag}\n".encode())
    return {
        "file": source.name,
        "location": source.location,
        "parts": len(source.parts),
        "sha256": digest.hexdigest(),
        "bytes": source.size,
    }
