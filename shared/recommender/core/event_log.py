"""The durable event log: where accepted shopper events are stored, in what layout, and the writers that store them
(an fsynced append to this process's segment on local disk, one object per batch on S3).

Layout, shared with what reads the log (compaction, queries, training from events):

- Each event is one JSON object on its own line (JSONL, UTF-8) with the keys of RECORD_KEYS: `ts` and
  `received_at` are ISO 8601 UTC with milliseconds and "Z"; `user_id`, `recommendation_id`, `value`, `currency`
  and an item's `quantity` and `price` are null when not given; `source` says who sent it ("user:<name>",
  "key:<name>").
- Files lie under `events/raw/date=YYYY-MM-DD/hour=HH/`, the date and hour of their events' `received_at` (UTC).
  Local disk: `<host>-<pid>-<start ms>-<n>.jsonl`, one segment per writing process at a time (never two writers on
  one file), rolled at each new hour and at a size cap. S3: `<unix ms>-<uuid hex>.jsonl`, one object per batch.
- Raw files are append-only and never rewritten. A segment is closed when its hour is over: every batch is appended
  to the segment of the hour of its own `received_at`, stamped as it is appended, so once an hour has ended
  (plus SETTLE_SECONDS, for a write or an S3 put that began in its last moments) nothing more arrives in its
  partition. Consuming only settled hours is therefore safe (`settled`).
- A batch is stored before it is acknowledged; if the process dies during a write, the segment can end in a torn
  line (no final newline, or not JSON). That batch was never acknowledged: readers skip a last line that does not
  parse.
- The same event_id can appear more than once (a client re-sending after a lost answer, two serving processes):
  readers count each event_id once (the first received).
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from recommender.core.errors import StorageError, StoreUnavailable
from recommender.core.storage import LocalStorage, Storage

RAW_PREFIX = "events/raw/"
SUFFIX = ".jsonl"
TYPES = ("view", "click", "add_to_cart", "purchase")
RECORD_KEYS = (
    "event_id",
    "type",
    "ts",
    "session_id",
    "user_id",
    "recommendation_id",
    "items",
    "value",
    "currency",
    "received_at",
    "source",
)
ITEM_KEYS = ("stock_code", "quantity", "price")
# How long after its hour ends a raw partition can still receive a batch begun before the end (a slow S3 put with
# its retries, a Lambda running to its timeout of at most 30 s): after that, the hour is settled.
SETTLE_SECONDS = 300
# A local segment is closed and a new one begun beyond this size, even within its hour.
SEGMENT_MAX_BYTES = 64 << 20
# Retry-After of a 503 when the log cannot store a batch (the client's retry should find the storage back).
RETRY_AFTER_SECONDS = 2
# A local segment's name: <host>-<pid>-<this process's start, unix ms>-<n>, n counting the segments the process
# began (whatever the number of logs it opened), so that no two writers ever share a file.
_STARTED_MS = int(time.time() * 1000)
_SEGMENTS = itertools.count(1)


def iso_utc(moment: datetime) -> str:
    """moment as the log writes times: ISO 8601 UTC with milliseconds and Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def partition(received_at: datetime) -> str:
    """The raw partition (a key prefix ending in '/') of events received at that moment."""
    moment = received_at.astimezone(UTC)
    return f"{RAW_PREFIX}date={moment:%Y-%m-%d}/hour={moment:%H}/"


def partition_hour(key: str) -> datetime | None:
    """The start of the hour a raw key's partition holds (UTC), or None for a key outside the layout."""
    parts = key.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) + "/" != RAW_PREFIX:
        return None
    try:
        return datetime.strptime(f"{parts[2]} {parts[3]}", "date=%Y-%m-%d hour=%H").replace(tzinfo=UTC)
    except ValueError:
        return None


def settled(key: str, now: datetime) -> bool:
    """Whether the raw file at key belongs to an hour that is over, SETTLE_SECONDS ago: nothing will be added to it."""
    hour = partition_hour(key)
    return hour is not None and now >= hour + timedelta(hours=1, seconds=SETTLE_SECONDS)


class EventLog(Protocol):
    """Stores batches of encoded events durably: when append returns, the batch survives a crash."""

    url: str

    def append(self, lines: bytes, received_at: datetime) -> str:
        """Store lines (complete JSONL lines) received at that moment; the key written. StoreUnavailable when the
        batch cannot be stored (nothing of it is acknowledged)."""


class LocalEventLog:
    """This process's segment files under <root>/events/raw/: one append (one write, then fsync) per batch."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int = SEGMENT_MAX_BYTES) -> None:
        self.root = Path(root).resolve()
        self.url = str(self.root / RAW_PREFIX)
        self.max_bytes = max_bytes
        self._host = socket.gethostname().split(".")[0] or "host"
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = os.getpid()
        self._partition = ""
        self._size = 0
        self.key = ""  # the current segment's key

    def append(self, lines: bytes, received_at: datetime) -> str:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: its parent's segment is not its own
                self._close()
                self._pid = os.getpid()
            where = partition(received_at)
            if self._fd is None or where != self._partition or self._size + len(lines) > self.max_bytes:
                self._roll(where)
            assert self._fd is not None
            try:
                written = os.write(self._fd, lines)
                if written != len(lines):
                    raise OSError(0, f"wrote {written} of {len(lines)} bytes (disk full?)")
                os.fsync(self._fd)
            except OSError as err:
                self._undo()
                raise StoreUnavailable(
                    f"cannot store events in {self.url}: {err.strerror or err}", RETRY_AFTER_SECONDS
                ) from None
            self._size += len(lines)
            return self.key

    def close(self) -> None:
        """Close the current segment (the next append begins another)."""
        with self._lock:
            self._close()

    def __del__(self) -> None:
        self._close()  # a log dropped with its process's resources (tests) leaves no descriptor open

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _undo(self) -> None:
        # A failed or short write must not leave a torn line for the next batch to follow: cut the segment back to
        # its last complete batch; if even that fails, leave it (readers skip a torn last line) and begin another.
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            self._close()

    def _roll(self, where: str) -> None:
        self._close()
        self.key = f"{where}{self._host}-{os.getpid()}-{_STARTED_MS}-{next(_SEGMENTS)}{SUFFIX}"
        path = self.root / self.key
        try:
            made = _make_dirs(path.parent)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            # The new file's name must be durable too, and so must every folder made for it.
            for folder in (path.parent, *made):
                _fsync_dir(folder)
        except OSError as err:
            self._close()
            raise StoreUnavailable(
                f"cannot begin an event segment in {self.url}: {err.strerror or err}", RETRY_AFTER_SECONDS
            ) from None
        self._partition, self._size = where, 0


def _make_dirs(folder: Path) -> list[Path]:
    """Make folder and its missing parents (0700); the parents of those made, whose entries changed."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it meanwhile
    return [m.parent for m in missing]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StorageEventLog:
    """One object per batch through the storage (S3: a put, acknowledged by S3 once stored durably)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.url = storage.url.rstrip("/") + "/" + RAW_PREFIX

    def append(self, lines: bytes, received_at: datetime) -> str:
        key = f"{partition(received_at)}{int(received_at.timestamp() * 1000)}-{uuid.uuid4().hex}{SUFFIX}"
        try:
            self.storage.write(key, lines)
        except StorageError as err:
            raise StoreUnavailable(err.message, RETRY_AFTER_SECONDS) from None
        return key


def open_event_log(storage: Storage) -> EventLog:
    """The event log beside a storage: segments in a local storage's folder, objects in an S3 one."""
    if isinstance(storage, LocalStorage):
        return LocalEventLog(storage.root)
    return StorageEventLog(storage)
