"""The event log's layout and writers: fsynced local segments (one per process, rolled each hour and at a size cap,
never a torn line after a failed write) and one S3 object per batch, both read back through the storage."""

import json
import os
import re
from datetime import UTC, datetime, timedelta

import pytest

from recommender.core import event_log
from recommender.core.errors import StoreUnavailable
from recommender.core.event_log import (
    LocalEventLog,
    StorageEventLog,
    open_event_log,
    partition,
    partition_hour,
    settled,
)
from recommender.core.storage import LocalStorage, S3Storage
from tests.conftest import BUCKET

T0 = datetime(2026, 12, 2, 10, 59, 59, 999000, tzinfo=UTC)


def line(event_id: str) -> bytes:
    return json.dumps({"event_id": event_id}).encode() + b"\n"


def stored_ids(storage) -> list[str]:
    """Every event id in the raw log, file by file in key order."""
    return [
        json.loads(row)["event_id"]
        for key in storage.list(event_log.RAW_PREFIX)
        for row in storage.read(key).splitlines()
    ]


def test_layout_names_date_and_hour_of_receipt_in_utc():
    assert partition(T0) == "events/raw/date=2026-12-02/hour=10/"
    elsewhere = T0.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    assert partition(elsewhere) == "events/raw/date=2026-12-02/hour=10/"
    assert event_log.iso_utc(elsewhere) == "2026-12-02T10:59:59.999Z"
    key = partition(T0) + "host-1-2-3.jsonl"
    assert partition_hour(key) == datetime(2026, 12, 2, 10, tzinfo=UTC)
    assert partition_hour("events/compacted/date=2026-12-02/x.parquet") is None
    assert partition_hour("events/raw/date=2026-13-02/hour=10/x.jsonl") is None
    # Settled once its hour is over by SETTLE_SECONDS: a batch begun in the hour's last moment may still arrive.
    end = datetime(2026, 12, 2, 11, tzinfo=UTC)
    assert not settled(key, end)
    assert not settled(key, end + timedelta(seconds=event_log.SETTLE_SECONDS - 1))
    assert settled(key, end + timedelta(seconds=event_log.SETTLE_SECONDS))


def test_both_backends_store_each_batch_whole_under_its_partition(storage):
    log = open_event_log(storage)
    assert isinstance(log, LocalEventLog if isinstance(storage, LocalStorage) else StorageEventLog)
    first = log.append(line("a") + line("b"), T0)
    second = log.append(line("c"), T0 + timedelta(microseconds=1))
    third = log.append(line("d"), T0 + timedelta(milliseconds=1))  # the next hour
    assert first.startswith("events/raw/date=2026-12-02/hour=10/") and first.endswith(".jsonl")
    assert third.startswith("events/raw/date=2026-12-02/hour=11/")
    assert sorted(stored_ids(storage)) == ["a", "b", "c", "d"]
    keys = storage.list("events/raw/")
    if isinstance(storage, S3Storage):
        # One object per batch, named by the time of receipt and a random part.
        assert len(keys) == 3
        assert re.fullmatch(r"events/raw/date=2026-12-02/hour=10/1796209199999-[0-9a-f]{32}\.jsonl", first)
    else:
        # One segment per process and hour: the second batch follows the first in the same file.
        assert first == second and len(keys) == 2
        assert re.fullmatch(rf"events/raw/date=2026-12-02/hour=10/[\w.-]+-{os.getpid()}-\d{{13}}-\d+\.jsonl", first)


def test_local_segments_roll_at_the_size_cap_and_are_private(tmp_path):
    log = LocalEventLog(tmp_path, max_bytes=104)
    keys = [log.append(line(f"event-{i:03d}"), T0) for i in range(8)]  # 26 bytes each: 4 to a segment
    assert len(set(keys)) == 2 and keys[:4] == [keys[0]] * 4
    for key in set(keys):
        path = tmp_path / key
        assert path.stat().st_mode & 0o777 == 0o600 and path.stat().st_size == 104
    assert stored_ids(LocalStorage(tmp_path)) == [f"event-{i:03d}" for i in range(8)]


def test_two_logs_of_one_process_never_share_a_segment(tmp_path):
    one, other = LocalEventLog(tmp_path), LocalEventLog(tmp_path)
    assert one.append(line("a"), T0) != other.append(line("b"), T0)
    assert sorted(stored_ids(LocalStorage(tmp_path))) == ["a", "b"]


def test_a_failed_local_write_leaves_no_torn_line(tmp_path, monkeypatch):
    log = LocalEventLog(tmp_path)
    log.append(line("before"), T0)
    real_write = os.write

    def short_write(fd, data):  # what a full disk does: part of the batch written, then no more room
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(event_log.os, "write", short_write)
    with pytest.raises(StoreUnavailable, match="cannot store events in .*wrote 23 of 46 bytes") as raised:
        log.append(line("lost") + line("lost-too"), T0)
    assert raised.value.retry_after == event_log.RETRY_AFTER_SECONDS and raised.value.status_code == 503
    monkeypatch.setattr(event_log.os, "write", real_write)
    log.append(line("after"), T0)
    assert stored_ids(LocalStorage(tmp_path)) == ["before", "after"]


def test_an_unusable_local_folder_is_a_503_with_retry_after(tmp_path):
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "raw").write_text("not a folder")
    with pytest.raises(StoreUnavailable, match="cannot begin an event segment in") as raised:
        LocalEventLog(tmp_path).append(line("a"), T0)
    assert raised.value.retry_after == event_log.RETRY_AFTER_SECONDS


def test_a_failed_s3_put_is_a_503_with_retry_after(s3, tmp_path):
    storage = S3Storage(s3, "no-such-bucket", "shop", cache_dir=str(tmp_path))
    with pytest.raises(StoreUnavailable, match=r"S3 write of s3://no-such-bucket/shop/events/raw/.*NoSuchBucket"):
        open_event_log(storage).append(line("a"), T0)
    assert S3Storage(s3, BUCKET, "shop").list("events/") == []
