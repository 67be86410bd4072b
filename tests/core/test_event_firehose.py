"""POST /events through Kinesis Data Firehose (moto): each event one record, delivered as JSON lines that compaction
reads; refused records sent again, and a batch acknowledged only when Firehose took all of it."""

import json
from datetime import UTC, datetime

import boto3
import pytest

from recommender.core.errors import StoreUnavailable
from recommender.core.event_firehose import FirehoseEventLog, firehose_event_log
from recommender.core.settings import Settings
from recommender.core.storage import S3Storage
from recommender.serving.resources import event_ingest
from recommender.training.event_compaction import compact
from tests.conftest import BUCKET
from tests.training.event_fixtures import event

AT = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)


def lines(*records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_events_reach_the_raw_layout_and_compaction_through_firehose(s3, tmp_path):
    firehose = boto3.client("firehose", region_name="us-east-1")
    firehose.create_delivery_stream(
        DeliveryStreamName="events",
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "BucketARN": f"arn:aws:s3:::{BUCKET}",
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            # what the template's !{timestamp:...} expressions give at this hour; moto does not expand them
            "Prefix": "shop/events/raw/date=2026-12-02/hour=10/",
            "FileExtension": ".jsonl",
        },
    )
    log = FirehoseEventLog(lambda: firehose, "events")
    sent = lines(
        event("e1", "view", "2026-12-02T10:29:00Z", items=["A"]),
        event("e2", "click", "2026-12-02T10:29:30Z", items=["A"]),
    )
    again = lines(event("e2", "click", "2026-12-02T10:29:30Z", items=["A"]))  # sent again
    log.append(sent, AT)
    log.append(again, AT)
    storage = S3Storage(s3, BUCKET, "shop", cache_dir=str(tmp_path))
    delivered = storage.list("events/raw/")
    bodies = b"".join(storage.read(key) for key in delivered)
    assert sorted(bodies.splitlines(keepends=True)) == sorted(
        sent.splitlines(keepends=True) + again.splitlines(keepends=True)
    )
    # moto names objects as Firehose does for a prefix without expressions (.../YYYY/MM/DD/HH/<name>, no file
    # extension); with the template's expressions Firehose writes <prefix><name>.jsonl: put them there
    for key in delivered:
        storage.write(f"events/raw/date=2026-12-02/hour=10/{key.rsplit('/', 1)[1]}.jsonl", storage.read(key))
        storage.delete(key)
    (day,) = compact(storage, now=lambda: datetime(2026, 12, 2, 12, tzinfo=UTC)).days
    assert (day.events, day.added, day.repeated, day.unreadable) == (2, 2, 1, 0)


class Flaky:
    """A Firehose client that takes only the first record of its first call, and refuses every record of the
    `failures` calls in all."""

    def __init__(self, failures: int = 1) -> None:
        self.calls: list[list[bytes]] = []
        self.failures = failures

    def put_record_batch(self, DeliveryStreamName, Records):
        self.calls.append([r["Data"] for r in Records])
        refused = {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"}
        if len(self.calls) > self.failures:
            return {"FailedPutCount": 0, "RequestResponses": [{"RecordId": "x"}] * len(Records)}
        taken = 1 if len(self.calls) == 1 else 0
        responses = [{"RecordId": "x"}] * taken + [refused] * (len(Records) - taken)
        return {"FailedPutCount": len(Records) - taken, "RequestResponses": responses}


def test_refused_records_are_sent_again_and_a_batch_never_half_acknowledged():
    client = Flaky()
    log = FirehoseEventLog(lambda: client, "events", sleep=lambda _s: None)
    log.append(b'{"event_id": "e1"}\n{"event_id": "e2"}\n', AT)
    assert client.calls == [[b'{"event_id": "e1"}\n', b'{"event_id": "e2"}\n'], [b'{"event_id": "e2"}\n']]
    stuck_client = Flaky(failures=10)
    stuck = FirehoseEventLog(lambda: stuck_client, "events", sleep=lambda _s: None)
    with pytest.raises(StoreUnavailable, match="cannot store events in Firehose stream events: slow down"):
        stuck.append(b'{"event_id": "e1"}\n{"event_id": "e2"}\n', AT)
    assert len(stuck_client.calls) == 3  # ATTEMPTS, then the 503


def test_a_missing_stream_is_a_503_and_the_setting_chooses_the_writer(s3):
    log = firehose_event_log(Settings(events_firehose_stream="nowhere"))
    with pytest.raises(StoreUnavailable, match="nowhere"):
        log.append(b'{"event_id": "e1"}\n', AT)
    assert isinstance(event_ingest(Settings(events_firehose_stream="nowhere")).log, FirehoseEventLog)
