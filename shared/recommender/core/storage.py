"""Where users, secrets and models live: one small interface over a local folder or an S3 prefix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from recommender.core.errors import ConfigError, NotFound, StorageError
from recommender.core.settings import Settings


class Storage(Protocol):
    """Flat keys ("models/ACTIVE") to bytes. Writes are atomic: a reader sees the old or the new bytes."""

    url: str

    def read(self, key: str) -> bytes:
        """The bytes at key; NotFound when absent."""

    def write(self, key: str, data: bytes) -> None:
        """Store data at key, atomically replacing what was there."""

    def create(self, key: str, data: bytes) -> bool:
        """Store data at key only if absent; True if this call created it, False if it existed."""

    def delete(self, key: str) -> bool:
        """Remove key; True if it existed."""

    def list(self, prefix: str) -> list[str]:
        """Every key that starts with prefix, sorted."""

    def local_copy(self, key: str) -> Path:
        """A local file holding the bytes at key (for memory-mapping); NotFound when absent."""

    def drop_local_copies(self, keep_prefix: str) -> None:
        """Delete local copies made by local_copy except those under keep_prefix (bounds a Lambda's /tmp)."""


def check_key(key: str) -> str:
    """Refuse keys that could escape the storage root or name a folder."""
    parts = PurePosixPath(key).parts
    if not key or key.startswith("/") or key.endswith("/") or any(p in ("..", ".") for p in parts):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class LocalStorage:
    """A folder on local disk. Files are private to their owner (0600): they hold password hashes and secrets."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _temp_beside(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp  # mkstemp already made it 0600

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"{key} not found in {self.url}") from None

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._temp_beside(path, data)
        os.replace(tmp, path)

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._temp_beside(path, data)
        try:
            # link() fails if the name exists, so the file appears complete or not at all.
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith("."):
                    continue  # temp files of writes in progress
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def local_copy(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"{key} not found in {self.url}")
        return path

    def drop_local_copies(self, keep_prefix: str) -> None:
        pass  # local_copy hands out the stored files themselves


class S3Storage:
    """Keys under s3://bucket/prefix. Puts are atomic per object; create uses If-None-Match: *."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", cache_dir: str = "/tmp/recommender-cache") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.cache_root = Path(cache_dir) / bucket / self.prefix

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, err: Exception, action: str, key: str) -> StorageError:
        return StorageError(f"S3 {action} of {self.url}{key} failed: {err}")

    def read(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"{key} not found in {self.url}") from None
            raise self._fail(err, "read", key) from None
        except BotoCoreError as err:
            raise self._fail(err, "read", key) from None

    def write(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as err:
            raise self._fail(err, "write", key) from None

    def create(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code")
            # 409 ConditionalRequestConflict: a concurrent conditional put of the same key is in flight.
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise self._fail(err, "create", key) from None
        except BotoCoreError as err:
            raise self._fail(err, "create", key) from None

    def delete(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(err, "delete", key) from None
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except (ClientError, BotoCoreError) as err:
            raise self._fail(err, "delete", key) from None

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                keys.extend(obj["Key"][len(self.prefix):] for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as err:
            raise self._fail(err, "list", prefix) from None
        return sorted(keys)

    def local_copy(self, key: str) -> Path:
        # Keys given here belong to immutable model versions, so a cached copy stays valid; the
        # loader verifies checksums anyway.
        target = self.cache_root / check_key(key)
        if target.is_file():
            return target
        data = self.read(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except OSError as err:
            raise StorageError(f"cannot keep a local copy of {key} in {self.cache_root}: {err}") from None
        return target

    def drop_local_copies(self, keep_prefix: str) -> None:
        # Files still memory-mapped by the model being replaced stay readable until it is unloaded.
        for path in self.cache_root.rglob("*"):
            if path.is_file() and not path.relative_to(self.cache_root).as_posix().startswith(keep_prefix):
                path.unlink(missing_ok=True)


def s3_client_config(settings: Settings) -> Any:
    """botocore's client configuration from the settings: retry mode, attempts, connect and read timeouts."""
    from botocore.config import Config

    return Config(retries={"mode": settings.s3_retry_mode, "total_max_attempts": settings.s3_max_attempts},
                  connect_timeout=settings.s3_connect_timeout, read_timeout=settings.s3_read_timeout)


def s3_call_limit(settings: Settings) -> float:
    """The longest one S3 call (a pointer, a user record) can wait with "standard" retries: every attempt using
    its whole connect and read timeouts, plus the longest backoffs between them (throttling: 1 s doubling, at most
    20 s each). A large download can take longer in all, but none of its reads waits past the read timeout."""
    attempts = settings.s3_max_attempts
    backoff = sum(min(2.0 ** i, 20.0) for i in range(attempts - 1))
    return attempts * (settings.s3_connect_timeout + settings.s3_read_timeout) + backoff


def open_storage(settings: Settings, s3_client: Any = None) -> Storage:
    """The storage named by settings.storage_url: a local path, or s3://bucket/prefix."""
    url = settings.storage_url
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise ConfigError(f"STORAGE_URL={url!r} names no bucket; use s3://bucket/prefix")
        if s3_client is None:
            import boto3  # imported here: local-disk runs never pay for boto3

            s3_client = boto3.client("s3", endpoint_url=settings.aws_endpoint_url, config=s3_client_config(settings))
        return S3Storage(s3_client, bucket, prefix, settings.cache_dir)
    if "://" in url:
        raise ConfigError(f"STORAGE_URL={url!r}: use a local path or s3://bucket/prefix")
    return LocalStorage(url)
