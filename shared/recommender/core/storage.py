"""Where users, secrets and models live: one small interface over a local folder or an S3 prefix."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from recommender.core.errors import ConfigError, NotFound, StorageError
from recommender.core.extras import optional
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

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The bytes at key and a tag naming this content, for write_if/delete_if; NotFound when absent."""

    def write_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """Replace key only if it still holds the content tagged `tag` (None: only if absent), atomically; False
        when another writer changed it meanwhile. A key changed this way must never be written unconditionally."""

    def delete_if(self, key: str, tag: str) -> bool:
        """Remove key only if it still holds the content tagged `tag`; False if it changed or is gone."""

    def delete(self, key: str) -> bool:
        """Remove key; True if it existed."""

    def sha256(self, key: str) -> str:
        """Hex sha256 of the bytes at key, from the checksum the backend keeps when it has one (no download);
        NotFound when absent."""

    def list(self, prefix: str) -> list[str]:
        """Every key that starts with prefix, sorted."""

    def local_copy(self, key: str, fresh: bool = False) -> Path:
        """A local file holding the bytes at key (for memory-mapping); NotFound when absent. fresh: fetch it again
        even if a copy exists (the copy failed its checksum)."""

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
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as err:
            raise self._fail(err, path) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException as err:
            os.unlink(tmp)  # a full disk leaves no partial file behind
            if isinstance(err, OSError):
                raise self._fail(err, path) from None
            raise
        return tmp  # mkstemp already made it 0600

    def _fail(self, err: OSError, path: Path) -> StorageError:
        return StorageError(
            f"cannot write {path.relative_to(self.root).as_posix()} in {self.url}: {err.strerror or err}",
            public=f"the storage cannot be written to ({err.strerror or type(err).__name__})",
        )

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"{key} not found in {self.url}") from None

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._temp_beside(path, data)
        os.replace(tmp, path)

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        data = self.read(key)
        return data, hashlib.sha256(data).hexdigest()

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        # One lock file per key, beside it (hidden from list()): conditional changes of the key run one at a time,
        # across processes. Readers take no lock: the rename makes every change atomic for them.
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _tag_now(self, path: Path) -> str | None:
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return None

    def write_if(self, key: str, data: bytes, tag: str | None) -> bool:
        path = self._path(key)
        # Written before the lock: it is held for a compare and a rename.
        tmp: str | None = self._temp_beside(path, data)
        try:
            with self._locked(path):
                if tag is None:
                    # link() fails if the name exists: create() takes no lock, and must not be overwritten.
                    return self._link_new(tmp, path)
                if self._tag_now(path) != tag:
                    return False
                os.replace(tmp, path)
                tmp = None
                return True
        finally:
            if tmp is not None:
                os.unlink(tmp)

    def delete_if(self, key: str, tag: str) -> bool:
        path = self._path(key)
        with self._locked(path):
            if self._tag_now(path) != tag:
                return False
            path.unlink()
            return True

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._temp_beside(path, data)
        try:
            return self._link_new(tmp, path)
        finally:
            os.unlink(tmp)

    def _link_new(self, tmp: str, path: Path) -> bool:
        # link() fails if the name exists, so the file appears complete or not at all.
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        try:
            with open(self._path(key), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"{key} not found in {self.url}") from None
        return digest.hexdigest()

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

    def local_copy(self, key: str, fresh: bool = False) -> Path:
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
        # For HTTP clients: what S3 said (its error code and message) or the kind of network failure, never the
        # bucket, key or endpoint (botocore's own messages name them).
        response = getattr(err, "response", None)
        error = response.get("Error", {}) if isinstance(response, dict) else {}
        reason = f"{error.get('Code')} ({error.get('Message')})" if error.get("Message") else error.get("Code")
        return StorageError(
            f"S3 {action} of {self.url}{key} failed: {err}",
            public=f"S3 {action} of the storage failed: {reason or type(err).__name__}",
        )

    def _read(self, key: str, call: Callable[[], Any]) -> Any:
        """Run one reading request (the body read included): NotFound for a missing key, else StorageError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"{key} not found in {self.url}") from None
            raise self._fail(err, "read", key) from None
        except BotoCoreError as err:
            raise self._fail(err, "read", key) from None

    def read(self, key: str) -> bytes:
        return self._read(key, lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())

    def write(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # S3 checks the upload against its SHA-256 and keeps it: sha256() then needs no download.
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ChecksumAlgorithm="SHA256")
        except (ClientError, BotoCoreError) as err:
            raise self._fail(err, "write", key) from None

    def sha256(self, key: str) -> str:
        head = self._read(
            key, lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        )
        stored = head.get("ChecksumSHA256") or ""
        if stored and "-" not in stored:  # "-N": a multipart checksum of checksums, not the object's
            return base64.b64decode(stored).hex()
        return hashlib.sha256(self.read(key)).hexdigest()  # written without one (by another tool)

    def create(self, key: str, data: bytes) -> bool:
        return self._conditional(
            "create",
            key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"),
        )

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        def get() -> tuple[bytes, str]:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), response["ETag"]

        return self._read(key, get)

    def write_if(self, key: str, data: bytes, tag: str | None) -> bool:
        condition = {"IfMatch": tag} if tag is not None else {"IfNoneMatch": "*"}
        return self._conditional(
            "conditional write",
            key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition),
        )

    def delete_if(self, key: str, tag: str) -> bool:
        return self._conditional(
            "conditional delete",
            key,
            lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=tag),
        )

    def _conditional(self, action: str, key: str, call: Callable[[], Any]) -> bool:
        """Run a conditional S3 request: True if it applied, False if its condition did not hold."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            call()
            return True
        except ClientError as err:
            # 412: the content changed; 409 ConditionalRequestConflict: a concurrent conditional request on the key
            # won; 404 (If-Match on a key deleted meanwhile).
            if err.response.get("Error", {}).get("Code") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
                "NoSuchKey",
                "404",
                "NotFound",
            ):
                return False
            raise self._fail(err, action, key) from None
        except BotoCoreError as err:
            raise self._fail(err, action, key) from None

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
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as err:
            raise self._fail(err, "list", prefix) from None
        return sorted(keys)

    def local_copy(self, key: str, fresh: bool = False) -> Path:
        # Keys given here belong to immutable model versions, so a cached copy stays valid; the loader verifies
        # checksums anyway, and asks for a fresh copy when the cached one fails.
        target = self.cache_root / check_key(key)
        if target.is_file() and not fresh:
            return target
        data = self.read(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except OSError as err:
            raise StorageError(
                f"cannot keep a local copy of {key} in {self.cache_root}: {err}",
                public=f"a model file cannot be copied to local disk ({err.strerror or type(err).__name__})",
            ) from None
        return target

    def drop_local_copies(self, keep_prefix: str) -> None:
        # Files still memory-mapped by the model being replaced stay readable until it is unloaded.
        for path in self.cache_root.rglob("*"):
            if path.is_file() and not path.relative_to(self.cache_root).as_posix().startswith(keep_prefix):
                path.unlink(missing_ok=True)


def s3_client_config(settings: Settings) -> Any:
    """botocore's client configuration from the settings: retry mode, attempts, connect and read timeouts."""
    from botocore.config import Config

    return Config(
        retries={"mode": settings.s3_retry_mode, "total_max_attempts": settings.s3_max_attempts},
        connect_timeout=settings.s3_connect_timeout,
        read_timeout=settings.s3_read_timeout,
    )


def s3_call_limit(settings: Settings) -> float:
    """The longest one S3 call (a pointer, a user record) can wait with "standard" retries: every attempt using
    its whole connect and read timeouts, plus the longest backoffs between them (throttling: 1 s doubling, at most
    20 s each). A large download can take longer in all, but none of its reads waits past the read timeout."""
    attempts = settings.s3_max_attempts
    backoff = sum(min(2.0**i, 20.0) for i in range(attempts - 1))
    return attempts * (settings.s3_connect_timeout + settings.s3_read_timeout) + backoff


def open_storage(settings: Settings, s3_client: Any = None) -> Storage:
    """The storage named by settings.storage_url: a local path, or s3://bucket/prefix."""
    url = settings.storage_url
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"STORAGE_URL={url!r} names no bucket; use s3://bucket/prefix")
        if s3_client is None:
            boto3 = optional("boto3", f"STORAGE_URL={url}")  # imported here: local-disk runs never pay for boto3

            s3_client = boto3.client("s3", endpoint_url=settings.aws_endpoint_url, config=s3_client_config(settings))
        return S3Storage(s3_client, bucket, prefix, settings.cache_dir)
    if "://" in url:
        raise ConfigError(f"STORAGE_URL={url!r}: use a local path or s3://bucket/prefix")
    return LocalStorage(url)
