"""Taking in events: each refusal reason, partial batches, duplicates (in a batch, re-sent, forgotten after their
time or beyond the capacity), batch-level problems, and a batch the log cannot store acknowledged for nothing."""

import json
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest

from recommender.core.errors import InvalidInput, StoreUnavailable
from recommender.core.event_log import ITEM_KEYS, RECORD_KEYS, TYPES, LocalEventLog
from recommender.core.settings import Settings
from recommender.core.storage import LocalStorage
from recommender.serving.attribution import new_recommendation_id
from recommender.serving.event_schemas import EventIn, EventItemIn
from recommender.serving.events import Ingest, RecentIds

NOW = datetime(2026, 12, 2, 10, 30, 0, 123456, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
REC_ID = new_recommendation_id("20261201T000000000Z-abcdef012345", NOW_MS - 5000)


def event(event_id: str = "e1", **changes) -> dict:
    base = {
        "event_id": event_id,
        "type": "purchase",
        "ts": "2026-12-02T11:29:59.5+01:00",
        "session_id": "s-1",
        "items": [{"stock_code": "85123A", "quantity": 2, "price": 2.55}],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def body(*events) -> bytes:
    return json.dumps({"events": list(events)}).encode()


@pytest.fixture
def ingest(tmp_path):
    return Ingest(LocalEventLog(tmp_path), Settings(), clock=lambda: NOW)


def stored(tmp_path) -> list[dict]:
    storage = LocalStorage(tmp_path)
    return [json.loads(row) for key in storage.list("events/raw/") for row in storage.read(key).splitlines()]


def test_an_accepted_event_is_stored_with_every_key_of_the_layout(ingest, tmp_path):
    sent = event(
        user_id="cust-9",
        recommendation_id=REC_ID,
        value=5.1,
        currency="gbp",
        items=[{"stock_code": " 85123A ", "quantity": 2, "price": 2.55}, {"stock_code": "71053"}],
    )
    answer = ingest.ingest(body(sent), "user:alice")
    assert answer == {
        "results": [{"event_id": "e1", "status": "accepted"}],
        "accepted": 1,
        "duplicates": 0,
        "refused": 0,
    }
    (record,) = stored(tmp_path)
    assert tuple(record) == RECORD_KEYS
    assert record == {
        "event_id": "e1",
        "type": "purchase",
        "ts": "2026-12-02T10:29:59.500Z",
        "session_id": "s-1",
        "user_id": "cust-9",
        "recommendation_id": REC_ID,
        "items": [
            {"stock_code": "85123A", "quantity": 2, "price": 2.55},
            {"stock_code": "71053", "quantity": None, "price": None},
        ],
        "value": 5.1,
        "currency": "GBP",
        "received_at": "2026-12-02T10:30:00.123Z",
        "source": "user:alice",
    }


def test_the_schema_and_the_log_agree_on_types_and_keys():
    assert get_args(EventIn.model_fields["type"].annotation) == TYPES
    assert tuple(EventItemIn.model_fields) == ITEM_KEYS
    assert set(EventIn.model_fields) | {"received_at", "source"} == set(RECORD_KEYS)


def test_optional_fields_are_null_and_unix_milliseconds_are_times(ingest, tmp_path):
    ingest.ingest(body(event(type="view", ts=NOW_MS - 1)), "key:shop-web")
    (record,) = stored(tmp_path)
    assert record["ts"] == "2026-12-02T10:30:00.122Z" and record["source"] == "key:shop-web"
    assert [record[k] for k in ("user_id", "recommendation_id", "value", "currency")] == [None] * 4


REFUSED = [
    ("not an object", ["a"], "an event must be a JSON object"),
    ("no event_id", event(event_id=...), "event_id: Field required"),
    ("event_id too long", event("x" * 65), "event_id: String should match pattern"),
    ("event_id characters", event("a b"), "event_id: String should match pattern"),
    ("event_id a number", event(7), "event_id: Input should be a valid string"),
    ("unknown type", event(type="refund"), "type: Input should be 'view', 'click', 'add_to_cart' or 'purchase'"),
    ("no ts", event(ts=...), "ts: Field required"),
    ("ts not a time", event(ts="yesterday"), "ts: 'yesterday' is neither ISO 8601"),
    ("ts without zone", event(ts="2026-12-02T10:00:00"), "has no time zone: add Z"),
    ("ts in seconds", event(ts=NOW_MS // 1000), "more than 30 days ago (it looks like seconds: send milliseconds)"),
    ("ts too old", event(ts="2026-10-01T00:00:00Z"), "ts: 2026-10-01T00:00:00.000Z is more than 30 days ago"),
    ("ts too far ahead", event(ts=NOW_MS + 2 * 86_400_000), "is more than 1 day ahead of the server's clock"),
    ("ts a float", event(ts=1.5e12), "ts: send ISO 8601 with a zone (a string) or unix milliseconds (an integer)"),
    ("ts a list", event(ts=[1]), "ts: send ISO 8601 with a zone (a string) or unix milliseconds (an integer)"),
    ("ts out of range", event(ts="9999-12-31T23:59:59-01:00"), "ts: '9999-12-31T23:59:59-01:00' is out of range"),
    ("ts absurd", event(ts=10**17), "ts: 100000000000000000 is not a time in unix milliseconds"),
    ("no session", event(session_id=...), "session_id: Field required"),
    ("session too long", event(session_id="s" * 129), "session_id: String should have at most 128 characters"),
    ("session control chars", event(session_id="a\nb"), "session_id: String should match pattern"),
    ("user_id empty", event(user_id=""), "user_id: String should have at least 1 character"),
    ("bad recommendation_id", event(recommendation_id="r1.x"), "recommendation_id 'r1.x' is not an id this service"),
    ("no items", event(items=[]), "items: List should have at least 1 item"),
    ("items not a list", event(items="85123A"), "items: Input should be a valid list"),
    ("too many items", event(items=[{"stock_code": "A"}] * 1001), "items: List should have at most 1000 items"),
    ("blank code", event(items=[{"stock_code": "  "}]), "items: a stock_code is blank"),
    ("code too long", event(items=[{"stock_code": "A" * 65}]), "items.0.stock_code: String should have at most 64"),
    ("code a number", event(items=[{"stock_code": 85123}]), "items.0.stock_code: Input should be a valid string"),
    ("quantity zero", event(items=[{"stock_code": "A", "quantity": 0}]), "items.0.quantity: Input should be greater"),
    (
        "quantity huge",
        event(items=[{"stock_code": "A", "quantity": 10**6 + 1}]),
        "items.0.quantity: Input should be less",
    ),
    (
        "quantity bool",
        event(items=[{"stock_code": "A", "quantity": True}]),
        "items.0.quantity: Input should be a valid",
    ),
    ("quantity text", event(items=[{"stock_code": "A", "quantity": "2"}]), "items.0.quantity: Input should be a valid"),
    ("price negative", event(items=[{"stock_code": "A", "price": -1}]), "items.0.price: Input should be greater"),
    ("price huge", event(items=[{"stock_code": "A", "price": 1e10}]), "items.0.price: Input should be less"),
    (
        "item extra",
        event(items=[{"stock_code": "A", "colour": "red"}]),
        "items.0.colour: Extra inputs are not permitted",
    ),
    ("value text", event(value="5"), "value: Input should be a valid number"),
    ("value huge", event(value=1e13), "value: Input should be less than or equal to 1000000000000"),
    ("currency", event(currency="pounds"), "currency: String should match pattern"),
    ("unknown field", event(page="/cart"), "page: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("sent", "reason"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_each_refusal_names_its_reason_and_stores_nothing(ingest, tmp_path, sent, reason):
    answer = ingest.ingest(body(sent), "user:alice")
    (result,) = answer["results"]
    assert result["status"] == "refused" and reason in result["reason"], result
    assert (answer["accepted"], answer["duplicates"], answer["refused"]) == (0, 0, 1)
    assert stored(tmp_path) == []


def test_non_finite_numbers_are_refused(ingest):
    # JSON has no NaN or Infinity; Python's json writes them and some clients do too: refused as not JSON at all.
    with pytest.raises(InvalidInput, match="not valid JSON"):
        ingest.ingest(b'{"events": [{"value": NaN}]}', "user:alice")


def test_a_bad_event_does_not_refuse_the_batch(ingest, tmp_path):
    answer = ingest.ingest(body(event("a"), event("b", type="x"), 5, event("c")), "user:alice")
    assert [(r["event_id"], r["status"]) for r in answer["results"]] == [
        ("a", "accepted"),
        ("b", "refused"),
        (None, "refused"),
        ("c", "accepted"),
    ]
    assert (answer["accepted"], answer["duplicates"], answer["refused"]) == (2, 0, 2)
    assert [r["event_id"] for r in stored(tmp_path)] == ["a", "c"]


def test_a_resent_event_is_a_duplicate_and_stored_once(ingest, tmp_path):
    first = ingest.ingest(body(event("a"), event("a"), event("b")), "user:alice")
    assert [r["status"] for r in first["results"]] == ["accepted", "duplicate", "accepted"]
    assert first["results"][1]["reason"] == "sent earlier in this batch"
    again = ingest.ingest(body(event("b"), event("c")), "user:alice")
    assert again["results"] == [
        {"event_id": "b", "status": "duplicate", "reason": "already stored"},
        {"event_id": "c", "status": "accepted"},
    ]
    assert (again["accepted"], again["duplicates"]) == (1, 1)
    assert [r["event_id"] for r in stored(tmp_path)] == ["a", "b", "c"]


def test_recent_ids_are_bounded_in_number_and_time():
    now = [0.0]
    recent = RecentIds(capacity=3, seconds=60, clock=lambda: now[0])
    recent.add(["a", "b", "c"])
    recent.add(["d"])  # the oldest goes
    assert "a" not in recent and {"b", "c", "d"} <= {x for x in "abcd" if x in recent} and len(recent) == 3
    now[0] = 30
    recent.add(["b"])  # re-stored: remembered anew, now the newest
    now[0] = 61
    assert [x for x in "bcd" if x in recent] == ["b"]
    recent.add(["e"])
    assert len(recent) == 2  # the expired are dropped as new ids come
    off = RecentIds(capacity=0, seconds=60)
    off.add(["a"])
    assert "a" not in off and len(off) == 0


def test_an_id_is_remembered_only_once_stored(tmp_path):
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "raw").write_text("a file where the log's folder should be")
    ingest = Ingest(LocalEventLog(tmp_path), Settings(), clock=lambda: NOW)
    with pytest.raises(StoreUnavailable):
        ingest.ingest(body(event("a"), event("b", type="x")), "user:alice")
    (tmp_path / "events" / "raw").unlink()
    answer = ingest.ingest(body(event("a")), "user:alice")  # the client's retry: accepted, not a duplicate
    assert answer["results"] == [{"event_id": "a", "status": "accepted"}]
    assert [r["event_id"] for r in stored(tmp_path)] == ["a"]


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (b"", "the request body is empty"),
        (b"{", "request body is not valid JSON"),
        (b"[]", 'a JSON object with a list "events"'),
        (b'{"event": []}', 'a JSON object with a list "events"'),
        (b'{"events": {"a": 1}}', 'a JSON object with a list "events"'),
    ],
)
def test_batch_level_problems_refuse_the_request(ingest, sent, message):
    with pytest.raises(InvalidInput, match=message):
        ingest.ingest(sent, "user:alice")


def test_the_batch_limit_is_a_setting(tmp_path):
    ingest = Ingest(LocalEventLog(tmp_path), Settings(events_max_batch=3), clock=lambda: NOW)
    assert ingest.ingest(body(*[event(f"e{i}") for i in range(3)]), "user:alice")["accepted"] == 3
    with pytest.raises(InvalidInput, match="at most 3 events and this one has 4: send them in several batches"):
        ingest.ingest(body(*[event(f"f{i}") for i in range(4)]), "user:alice")
    assert len(stored(tmp_path)) == 3


def test_an_empty_batch_is_answered(ingest, tmp_path):
    assert ingest.ingest(b'{"events": []}', "user:alice") == {
        "results": [],
        "accepted": 0,
        "duplicates": 0,
        "refused": 0,
    }
    assert not (tmp_path / "events").exists()


def test_times_near_the_bounds_are_accepted(ingest):
    edge = [
        event("old", ts=NOW_MS - 30 * 86_400_000 + 1000),
        event("ahead", ts=(NOW + timedelta(hours=23)).isoformat()),
    ]
    assert ingest.ingest(body(*edge), "user:alice")["accepted"] == 2
