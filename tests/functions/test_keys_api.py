"""API keys on the recommend function: the keyed routes, scopes, origins and CORS, revocation within the poll,
the rate limit, user tokens unchanged, and the recommendation ids of the answers."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from functions.auth.app import app as auth_app
from functions.recommend.app import app as recommend_app
from recommender.core import registry
from recommender.core.settings import get_settings
from recommender.serving.attribution import parse_recommendation_id
from recommender.serving.keys import add_key, list_keys, revoke_key
from tests.functions.test_handlers import body, handlers, s3_deployment  # noqa: F401 - fixtures

SHOP = "https://shop.example.com"
BASKET = {"product_list": [], "n": 3}


@pytest.fixture
def client(trained_storage, monkeypatch):
    monkeypatch.setenv("MODEL_POLL_SECONDS", "0.2")
    get_settings.cache_clear()
    with TestClient(recommend_app) as client:
        yield client


@pytest.fixture
def token(trained_storage, user):
    with TestClient(auth_app) as auth:
        answer = auth.post("/token", data={"username": user.username, "password": user.password})
    return answer.json()["access_token"]


def test_a_browser_key_answers_its_origin_with_cors_headers_and_ids(client, trained_storage, token):
    _, key = add_key(trained_storage, "web", "recommend", SHOP)
    headers = {"X-API-Key": key, "Origin": SHOP}
    keyed = client.post("/send_data", json=BASKET, headers=headers)
    assert keyed.status_code == 200, keyed.text
    assert keyed.headers["access-control-allow-origin"] == SHOP and keyed.headers["vary"] == "Origin"
    assert set(keyed.headers["access-control-expose-headers"].split(", ")) == {"X-Recommendation-Id", "Retry-After"}
    assert "access-control-allow-credentials" not in keyed.headers
    ref = parse_recommendation_id(keyed.headers["x-recommendation-id"])
    assert ref.version == registry.active_version(trained_storage) and ref.arm is None
    assert abs(ref.at_ms - time.time() * 1000) < 60_000
    # The body is the one a user's token gets, byte for byte: the id travels in the header only.
    with_token = client.post("/send_data", json=BASKET, headers={"Authorization": f"Bearer {token}"})
    assert with_token.content == keyed.content and "recommendation_id" not in keyed.text
    assert with_token.headers["x-recommendation-id"] != keyed.headers["x-recommendation-id"]
    assert "access-control-allow-origin" not in with_token.headers
    answer = client.post("/recommendations", json=BASKET, headers={"Authorization": f"Bearer {key}", "Origin": SHOP})
    assert (
        answer.status_code == 200 and parse_recommendation_id(answer.json()["recommendation_id"]).version == ref.version
    )
    found = client.get("/items", params={"q": ""}, headers=headers)
    assert found.status_code == 200 and found.headers["access-control-allow-origin"] == SHOP


def test_origins_are_enforced_on_the_request_itself(client, trained_storage):
    _, key = add_key(trained_storage, "web", "recommend", SHOP)
    add_key(trained_storage, "other-shop", "recommend", "https://other.example.com")
    _, server = add_key(trained_storage, "backend", "recommend")
    for origin, message in (
        ("https://evil.example.com", "origin https://evil.example.com is not listed for the API key 'web'"),
        # Listed for another key: the preflight passes, the request with this key does not.
        ("https://other.example.com", "origin https://other.example.com is not listed for the API key 'web'"),
        (None, "carries no Origin header"),
    ):
        answer = client.post(
            "/send_data", json=BASKET, headers={"X-API-Key": key, **({"Origin": origin} if origin else {})}
        )
        assert answer.status_code == 403 and message in answer.json()["detail"]
    evil = client.post("/send_data", json=BASKET, headers={"X-API-Key": key, "Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in evil.headers  # a browser on that origin cannot even read the refusal
    assert client.post("/send_data", json=BASKET, headers={"X-API-Key": server}).status_code == 200
    leaked = client.post("/send_data", json=BASKET, headers={"X-API-Key": server, "Origin": SHOP})
    assert leaked.status_code == 403 and "is a server key" in leaked.json()["detail"]


@pytest.mark.parametrize("path", ["/send_data", "/recommendations", "/items"])
def test_preflights_are_answered_for_exactly_the_listed_origins(client, trained_storage, path):
    add_key(trained_storage, "web", "recommend", f"{SHOP},http://localhost:8000")
    add_key(trained_storage, "collector", "events", "https://events-only.example.com")
    method = "GET" if path == "/items" else "POST"
    ask = {"Access-Control-Request-Method": method, "Access-Control-Request-Headers": "content-type,x-api-key"}
    allowed = client.options(path, headers={"Origin": "http://localhost:8000", **ask})
    assert allowed.status_code == 204 and allowed.content == b""
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:8000"
    assert allowed.headers["access-control-allow-methods"] == method
    assert allowed.headers["access-control-allow-headers"] == "Content-Type, X-API-Key, Authorization"
    assert allowed.headers["vary"] == "Origin" and int(allowed.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in allowed.headers
    for origin in ("https://evil.example.com", "https://events-only.example.com", "null"):
        refused = client.options(path, headers={"Origin": origin, **ask})
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        assert f"origin {origin} may not call {path}" in refused.json()["detail"]
    plain = client.options(path)  # not a browser's preflight
    assert plain.status_code == 204 and plain.headers["allow"] == f"{method}, OPTIONS"
    assert "access-control-allow-origin" not in plain.headers
    assert all("*" not in value for value in allowed.headers.values())


def test_a_key_reaches_only_the_routes_of_its_scopes(client, trained_storage, token):
    _, recommend_only = add_key(trained_storage, "web", "recommend")
    _, events_only = add_key(trained_storage, "collector", "events")
    answer = client.post("/send_data", json=BASKET, headers={"X-API-Key": events_only})
    assert answer.status_code == 403 and "has no 'recommend' scope, which /send_data needs" in answer.json()["detail"]
    for path in ("/model", "/sample_basket"):
        for headers in ({"X-API-Key": recommend_only}, {"Authorization": f"Bearer {recommend_only}"}):
            refused = client.get(path, headers=headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["detail"] == f"an API key cannot call {path}: it needs a user's token (POST /token)"
    with TestClient(auth_app) as auth:
        assert auth.get("/users/me", headers={"X-API-Key": recommend_only}).status_code == 403
        assert auth.get("/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    # /events takes a key of scope events (and a user's token), and records who sent each batch.
    def batch(event_id: str) -> dict:
        event = {"event_id": event_id, "type": "click", "ts": int(time.time() * 1000), "session_id": "s"}
        return {"events": [{**event, "items": [{"stock_code": "85123A"}]}]}

    refused = client.post("/events", json=batch("e1"), headers={"X-API-Key": recommend_only})
    assert refused.status_code == 403 and "has no 'events' scope" in refused.json()["detail"]
    for event_id, headers in (("e2", {"X-API-Key": events_only}), ("e3", {"Authorization": f"Bearer {token}"})):
        accepted = client.post("/events", json=batch(event_id), headers=headers)
        assert accepted.status_code == 200 and accepted.json()["accepted"] == 1, accepted.text
    assert client.post("/events", json=batch("e4")).status_code == 401
    stored = [
        json.loads(row) for k in trained_storage.list("events/raw/") for row in trained_storage.read(k).splitlines()
    ]
    assert {(r["event_id"], r["source"]) for r in stored} == {("e2", "key:collector"), ("e3", "user:alice")}


def test_a_revoked_key_is_refused_and_a_new_one_accepted_within_the_poll(client, trained_storage):
    _, key = add_key(trained_storage, "web", "recommend")
    assert client.get("/items", headers={"X-API-Key": key}).status_code == 200
    revoke_key(trained_storage, "web")
    _, new = add_key(trained_storage, "web2", "recommend")
    time.sleep(get_settings().model_poll_seconds + 0.05)
    refused = client.get("/items", headers={"X-API-Key": key})
    assert refused.status_code == 401 and "unknown or revoked API key" in refused.json()["detail"]
    assert client.get("/items", headers={"X-API-Key": new}).status_code == 200


def test_over_its_rate_a_key_gets_429_with_retry_after(client, trained_storage):
    _, key = add_key(trained_storage, "web", "recommend", SHOP, rate=2)
    _, other = add_key(trained_storage, "web2", "recommend", SHOP, rate=2)
    headers = {"X-API-Key": key, "Origin": SHOP}
    assert [client.post("/send_data", json=BASKET, headers=headers).status_code for _ in range(2)] == [200, 200]
    limited = client.post("/send_data", json=BASKET, headers=headers)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert "over its rate of 2 requests/s" in limited.json()["detail"]
    assert limited.headers["access-control-allow-origin"] == SHOP  # the widget can read Retry-After
    assert client.post("/send_data", json=BASKET, headers={"X-API-Key": other, "Origin": SHOP}).status_code == 200


def test_unknown_keys_and_missing_credentials_are_401(client):
    for headers in ({"X-API-Key": "rk_pub_nope"}, {"Authorization": "Bearer rk_sec_nope"}, {}):
        answer = client.post("/send_data", json=BASKET, headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"


def test_keys_on_the_lambda_path_over_s3(s3_deployment, handlers, event, lambda_context):
    """API Gateway events through Mangum, keys in a moto bucket: the preflight, the keyed request, last used."""
    storage, _version, items = s3_deployment
    _, key = add_key(storage, "web", "recommend", SHOP)
    preflight = event("send_data")
    preflight["routeKey"] = preflight["requestContext"]["routeKey"] = "OPTIONS /send_data"
    preflight["requestContext"]["http"]["method"] = "OPTIONS"
    preflight["headers"] = {"origin": SHOP, "access-control-request-method": "POST", "host": "api.example.com"}
    preflight["body"] = ""
    answered = handlers[1](preflight, lambda_context)
    assert answered["statusCode"] == 204 and answered["headers"]["access-control-allow-origin"] == SHOP
    request = event("send_data")
    del request["headers"]["authorization"]
    request["headers"].update({"x-api-key": key, "origin": SHOP})
    request["body"] = request["body"].replace("REPLACE_WITH_CODE", items.codes[0])
    response = handlers[1](request, lambda_context)
    assert response["statusCode"] == 200, response["body"]
    assert response["headers"]["access-control-allow-origin"] == SHOP
    assert parse_recommendation_id(response["headers"]["x-recommendation-id"]).version == _version
    assert len(body(response)["result"]["recommendation"]) == 5
    deadline = time.monotonic() + 5
    while list_keys(storage)[0].last_used is None:
        assert time.monotonic() < deadline, "last used not recorded"
        time.sleep(0.02)


def test_the_events_preflight_is_answered_for_the_origins_of_events_keys(client, trained_storage):
    add_key(trained_storage, "collector", "events", "https://events-only.example.com")
    add_key(trained_storage, "web", "recommend", SHOP)
    ask = {"Access-Control-Request-Method": "POST"}
    allowed = client.options("/events", headers={"Origin": "https://events-only.example.com", **ask})
    assert (
        allowed.status_code == 204
        and allowed.headers["access-control-allow-origin"] == "https://events-only.example.com"
    )
    assert client.options("/events", headers={"Origin": SHOP, **ask}).status_code == 403
