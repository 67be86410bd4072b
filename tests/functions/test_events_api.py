"""POST /events through the recommend function's app: who may send, the body limit of its own, batch-level 4xx,
per-event answers, and a 503 with Retry-After (nothing acknowledged) when the log cannot store."""

import json
import time

import pytest
from fastapi.testclient import TestClient

from functions.auth.app import app as auth_app
from functions.recommend.app import app as recommend_app
from recommender.core.settings import get_settings
from recommender.core.storage import LocalStorage


def event(event_id: str, **changes) -> dict:
    return {
        "event_id": event_id,
        "type": "click",
        "ts": int(time.time() * 1000),
        "session_id": "s-1",
        "items": [{"stock_code": "85123A"}],
        **changes,
    }


@pytest.fixture
def api(user, trained_storage):
    with TestClient(auth_app) as auth, TestClient(recommend_app) as rec:
        token = auth.post("/token", data={"username": "alice", "password": user.password}).json()["access_token"]
        rec.headers["Authorization"] = f"Bearer {token}"
        yield rec


def stored(storage: LocalStorage) -> list[dict]:
    return [json.loads(row) for key in storage.list("events/raw/") for row in storage.read(key).splitlines()]


def test_a_batch_is_answered_per_event_and_stored_as_the_user(api, trained_storage):
    answer = api.post("/events", json={"events": [event("a"), event("b", type="bought"), event("a")]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "results": [
            {"event_id": "a", "status": "accepted"},
            {
                "event_id": "b",
                "status": "refused",
                "reason": "type: Input should be 'view', 'click', 'add_to_cart' or 'purchase'",
            },
            {"event_id": "a", "status": "duplicate", "reason": "sent earlier in this batch"},
        ],
        "accepted": 1,
        "duplicates": 1,
        "refused": 1,
    }
    (record,) = stored(trained_storage)
    assert record["event_id"] == "a" and record["source"] == "user:alice"


def test_without_a_token_nothing_is_stored(api, trained_storage):
    answer = api.post("/events", json={"events": [event("a")]}, headers={"Authorization": ""})
    assert answer.status_code == 401
    assert stored(trained_storage) == []


def test_events_have_a_body_limit_of_their_own(api, trained_storage, monkeypatch):
    # 500 events of ~170 bytes: above MAX_BODY_BYTES (64 KiB), within EVENTS_MAX_BODY_BYTES (1 MiB).
    batch = {"events": [event(f"e{i:03d}", session_id="s" * 60) for i in range(500)]}
    content = json.dumps(batch).encode()
    assert get_settings().max_body_bytes < len(content) < get_settings().events_max_body_bytes
    answer = api.post("/events", content=content)
    assert answer.status_code == 200 and answer.json()["accepted"] == 500, answer.text
    assert api.post("/send_data", content=content).status_code == 413  # the other routes keep theirs
    monkeypatch.setenv("EVENTS_MAX_BODY_BYTES", str(len(content) - 1))
    get_settings.cache_clear()
    too_large = api.post("/events", content=content)
    assert too_large.status_code == 413
    assert too_large.json() == {"detail": f"request body is larger than the limit of {len(content) - 1} bytes"}
    assert len(stored(trained_storage)) == 500


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "the request body is empty"),
        (b"{", "request body is not valid JSON"),
        (b'{"events": 3}', 'the request body must be a JSON object with a list "events"'),
        (
            json.dumps({"events": [event(f"e{i}") for i in range(501)]}).encode(),
            "a batch holds at most 500 events and this one has 501",
        ),
    ],
    ids=["empty", "not JSON", "no list", "over the batch limit"],
)
def test_batch_level_problems_are_422_and_store_nothing(api, trained_storage, content, detail):
    answer = api.post("/events", content=content)
    assert answer.status_code == 422 and answer.json()["detail"].startswith(detail), answer.text
    assert stored(trained_storage) == []


def test_a_log_that_cannot_store_is_a_503_with_retry_after(api, trained_storage):
    (trained_storage.root / "events").mkdir()
    (trained_storage.root / "events" / "raw").write_text("a file where the log's folder should be")
    answer = api.post("/events", json={"events": [event("a"), event("b")]})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "2"
    assert answer.json()["detail"].startswith("cannot begin an event segment in ")
    (trained_storage.root / "events" / "raw").unlink()
    retried = api.post("/events", json={"events": [event("a"), event("b")]})
    assert retried.json()["accepted"] == 2
    assert [r["event_id"] for r in stored(trained_storage)] == ["a", "b"]


def test_the_openapi_document_describes_an_event_in_full():
    body = recommend_app.openapi()["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]
    assert "$ref" not in json.dumps(body)  # nested models inlined: a #/$defs reference would resolve nowhere
    event_schema = body["schema"]["properties"]["events"]["items"]
    assert event_schema["required"] == ["event_id", "type", "ts", "session_id", "items"]
    assert set(event_schema["properties"]["items"]["items"]["properties"]) == {"stock_code", "quantity", "price"}
