"""The event log's writer through Kinesis Data Firehose (EVENTS_FIREHOSE_STREAM; template.yaml: EventsFirehose):
each event one record, which the stream delivers as JSON lines under the raw layout of core.event_log.

A batch is acknowledged only when Firehose has taken every one of its records (Firehose keeps what it took, and
retries its delivery to S3 for up to 24 hours). Records it refuses are sent again a few times; if some still
fail, the whole batch is answered 503, and the client's retry may store some events twice, which every reader
of the log counts once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from recommender.core.errors import StoreUnavailable
from recommender.core.event_log import RETRY_AFTER_SECONDS
from recommender.core.settings import Settings

ATTEMPTS = 3


class FirehoseEventLog:
    """One PutRecordBatch per batch of events (up to 500 records, as a batch of POST /events)."""

    def __init__(self, client: Callable[[], Any], stream: str, sleep: Callable[[float], None] = time.sleep) -> None:
        self._client = client
        self._made: Any = None
        self.stream = stream
        self.url = f"firehose:{stream}"
        self._sleep = sleep

    def append(self, lines: bytes, received_at: datetime) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        # Each record keeps its newline: the objects Firehose writes are then JSON lines as they stand.
        records = [{"Data": line} for line in lines.splitlines(keepends=True) if line.strip()]
        if self._made is None:
            self._made = self._client()
        problem = ""
        for attempt in range(ATTEMPTS):
            try:
                answer = self._made.put_record_batch(DeliveryStreamName=self.stream, Records=records)
            except (ClientError, BotoCoreError) as err:
                problem = str(err)
            else:
                if not answer.get("FailedPutCount"):
                    return self.url
                failed = [r for r, result in zip(records, answer["RequestResponses"]) if result.get("ErrorCode")]
                problem = next(
                    r.get("ErrorMessage") or r["ErrorCode"] for r in answer["RequestResponses"] if r.get("ErrorCode")
                )
                records = failed  # only those: the others are stored
            if attempt + 1 < ATTEMPTS:
                self._sleep(0.05 * 2**attempt)
        raise StoreUnavailable(f"cannot store events in Firehose stream {self.stream}: {problem}", RETRY_AFTER_SECONDS)


def firehose_event_log(settings: Settings) -> FirehoseEventLog:
    """The Firehose writer of settings.events_firehose_stream, its client made at the first batch."""
    assert settings.events_firehose_stream

    def client() -> Any:
        import boto3

        from recommender.core.storage import s3_client_config

        return boto3.client("firehose", endpoint_url=settings.aws_endpoint_url, config=s3_client_config(settings))

    return FirehoseEventLog(client, settings.events_firehose_stream)
