"""The real writers of POST /events (core.event_log, through serving.events.Ingest) feeding compaction and the
report, on local disk and S3: the four events of a shopper's visit land once in the Parquet log with the answer's
recommendation_id, a re-sent batch in a later hour included."""

import json
from datetime import UTC, datetime

from recommender.core.event_log import open_event_log
from recommender.core.settings import Settings
from recommender.serving.attribution import new_recommendation_id
from recommender.serving.events import Ingest
from recommender.tools.event_report import report
from recommender.training import event_tables
from recommender.training.event_compaction import compact

VERSION = "20261201T000000000Z-abcdef012345"
AT = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)


def visit(answer: str) -> bytes:
    ms = int(AT.timestamp() * 1000)
    common = {"session_id": "s-7", "user_id": "cust-9"}
    return json.dumps(
        {
            "events": [
                {"event_id": "v1", "type": "view", "ts": ms - 4000, "recommendation_id": answer,
                 "items": [{"stock_code": "85123A"}, {"stock_code": "71053"}], **common},
                {"event_id": "c1", "type": "click", "ts": ms - 3000, "recommendation_id": answer,
                 "items": [{"stock_code": "71053"}], **common},
                {"event_id": "a1", "type": "add_to_cart", "ts": ms - 2000,
                 "items": [{"stock_code": "71053", "quantity": 1, "price": 3.39}], **common},
                {"event_id": "p1", "type": "purchase", "ts": ms - 1000, "value": 8.49, "currency": "GBP",
                 "items": [{"stock_code": "85123A", "quantity": 2, "price": 2.55},
                           {"stock_code": "71053", "quantity": 1, "price": 3.39}], **common},
            ]
        }
    ).encode()  # fmt: skip


def test_posted_events_are_compacted_once_and_reported(storage):
    answer = new_recommendation_id(VERSION, int(AT.timestamp() * 1000) - 5000)
    log = open_event_log(storage)
    assert Ingest(log, Settings(), clock=lambda: AT).ingest(visit(answer), "key:shop-web")["accepted"] == 4
    # the client did not hear the answer and sends the batch again an hour later, to a new serving process
    later = datetime(2026, 12, 2, 11, 40, tzinfo=UTC)
    Ingest(open_event_log(storage), Settings(), clock=lambda: later).ingest(visit(answer), "key:shop-web")
    assert len(storage.list(event_tables.RAW)) == 2
    (day,) = compact(storage, now=lambda: datetime(2026, 12, 2, 13, 0, tzinfo=UTC)).days
    assert (day.events, day.added, day.repeated, day.removed) == (4, 4, 4, 2)
    con = event_tables.connect()
    with event_tables.staged(storage) as stage:
        (path,) = stage.paths([event_tables.day_key("2026-12-02")])
        rows = con.execute(
            f"SELECT event_id, type, recommendation_id, model_version, count(*) FROM read_parquet('{path}') "
            "GROUP BY ALL ORDER BY min(ts)"
        ).fetchall()
    assert rows == [
        ("v1", "view", answer, VERSION, 2),
        ("c1", "click", answer, VERSION, 1),
        ("a1", "add_to_cart", None, None, 1),
        ("p1", "purchase", None, None, 2),
    ]
    (attributed, unattributed) = report(storage)
    assert (attributed.model_version, attributed.views, attributed.clicks, attributed.add_to_carts) == (
        VERSION,
        1,
        1,
        1,
    )
    assert (attributed.purchases, attributed.revenue, attributed.currency) == (1, 3.39, "GBP")
    assert (unattributed.model_version, unattributed.purchases, unattributed.revenue) == (None, 1, 5.1)
