"""The recommendation routes answered straight on ASGI (serving.fast_path) give the bytes the whole FastAPI app
gives (status, headers, body) for every kind of request, and stay documented in the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from functions.recommend.app import app
from recommender.core import registry
from recommender.core.items import Items
from recommender.core.settings import get_settings
from recommender.serving import web
from recommender.serving.fast_path import FastRoute, json_headers, plain_basket
from recommender.serving.keys import add_key
from recommender.serving.model import Model
from recommender.serving.schemas import MAX_BASKET, MAX_N, BasketIn, RecommendationsIn
from recommender.serving.tokens import issue_token, load_secret

# An answer's id holds the time and a random part: the same request answered twice differs only there.
_ID = re.compile(rb"(r1\.[^.\"]+\.[^.\"]+\.)\d+\.[0-9a-f]{8}")


def call(asgi, path: str, headers: list[tuple[str, str]], chunks: list[bytes], disconnect: bool = False) -> tuple:
    """One POST through an ASGI app: (status, headers, body), the answer's id masked."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "headers": [(b"host", b"127.0.0.1")] + [(k.lower().encode(), v.encode()) for k, v in headers],
    }
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        messages = messages[:-1] + [{"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(asgi(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    masked = [(k, _ID.sub(rb"\1ID", v)) for k, v in start["headers"]]
    return start["status"], masked, _ID.sub(rb"\1ID", body)


@pytest.fixture
def codes(trained_storage) -> list[str]:
    version = registry.active_version(trained_storage)
    items = Items.from_json(trained_storage.read(registry.artifact_key(version, "catalog.json")))
    return [items[i].stock_code for i in range(6)]


@pytest.fixture
def credentials(trained_storage, user) -> dict[str, str]:
    settings = get_settings()
    token = issue_token(user.username, load_secret(settings, trained_storage), stamp=user.stamp)
    _, key = add_key(trained_storage, "shop", "recommend", rate=1000)
    _, events_key = add_key(trained_storage, "collector", "events", rate=1000)
    return {"token": token, "key": key, "events_key": events_key}


def cases(codes: list[str], c: dict[str, str]) -> list[tuple[str, list[tuple[str, str]], list[bytes]]]:
    """(path, headers, body chunks) of every kind of request the two routes meet."""
    bearer = [("Authorization", f"Bearer {c['token']}"), ("Content-Type", "application/json")]

    def body(data: object) -> list[bytes]:
        return [json.dumps(data).encode()]

    plain = {"product_list": codes[:2], "n": 3}
    requests = []
    for path in ("/send_data", "/recommendations"):
        requests += [
            (path, bearer, body(plain)),
            (path, bearer, body({"product_list": codes[:1]})),  # n by default
            (path, bearer, body({"product_list": [codes[0], "NOPE", f" {codes[1]} "], "n": 4})),
            (path, bearer, body({"product_list": [], "n": 2})),
            (path, bearer, body({"product_list": codes[:2], "n": 3, "exclude": codes[2:4], "explain": True})),
            (path, bearer, body({"product_list": codes[:2], "n": 2, "explain": False, "user_id": "u-1"})),
            (path, bearer, body({"product_list": codes[:2], "misspelt": 1})),  # ignored here, refused there
            (path, bearer, body({"product_list": codes[:2], "n": True})),
            (path, bearer, body({"product_list": codes[:2], "n": 101})),
            (path, bearer, body({"product_list": codes[:2], "n": 2.0})),
            (path, bearer, body({"product_list": [1, 2]})),
            (path, bearer, body([codes[0]])),
            (path, bearer, [b'{"product_list": ["a"], "n": 5, "n": 7}']),
            (path, bearer, [b'{"product_list": ["a" '] + [b"]}"]),  # two chunks
            (path, bearer, [b"not json"]),
            (path, bearer, [b"   "]),
            (path, [("Authorization", f"Bearer {c['token']}"), ("Content-Length", "9999999")], [b"{}"]),
            (path, bearer, [b"[" + b'"x",' * 300_000, b'"x"]']),  # over MAX_BODY_BYTES, announced by nobody
            (path, [], body(plain)),
            (path, [("Authorization", "Bearer not.a.token")], body(plain)),
            (path, [("Authorization", f"Basic {c['token']}")], body(plain)),
            (path, [("Authorization", f"bearer {c['token']}"), ("Authorization", "Bearer x")], body(plain)),
            (path, [("X-API-Key", c["key"])], body(plain)),
            (path, [("Authorization", f"Bearer {c['key']}")], body(plain)),
            (path, [("X-API-Key", c["events_key"])], body(plain)),
            (path, [("X-API-Key", "rk_sec_unknown")], body({"n": 1})),
            (path, [("X-API-Key", ""), ("Authorization", f"Bearer {c['token']}")], body(plain)),  # empty values
            (path, [("Authorization", "")], body(plain)),
            (path, [*bearer, ("Origin", "https://shop.example.com")], body(plain)),
        ]
    return requests


def test_every_request_gets_the_whole_apps_bytes(codes, credentials):
    for path, headers, chunks in cases(codes, credentials):
        fast, whole = call(app, path, headers, chunks), call(app.full, path, headers, chunks)
        assert fast == whole, (path, headers, chunks[0][:80])
    statuses = {call(app, p, h, c)[0] for p, h, c in cases(codes, credentials)}
    assert statuses == {200, 401, 403, 413, 422}


def test_a_client_gone_mid_body_and_an_unexpected_error_are_answered_alike(codes, credentials, monkeypatch):
    headers = [("Authorization", f"Bearer {credentials['token']}")]
    chunks = [b'{"product_list": ', b"[]}"]
    assert call(app, "/send_data", headers, chunks, True) == call(app.full, "/send_data", headers, chunks, True)

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Model, "recommend", broken)
    body = {"product_list": codes[:1]}
    fast = _sent_before_raising(app, headers, body)  # a 500 with its security header, then raised for the log
    assert fast == _sent_before_raising(app.full, headers, body) and fast[0] == 500


def _sent_before_raising(asgi, headers: list[tuple[str, str]], data: dict) -> tuple:
    sent: list[dict] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/send_data",
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": json.dumps(data).encode()}

    async def send(message: dict) -> None:
        sent.append(message)

    with pytest.raises(RuntimeError):
        asyncio.run(asgi(scope, receive, send))
    return sent[0]["status"], sent[0]["headers"], sent[1]["body"]


def test_the_fast_routes_keep_their_openapi_documentation():
    document = app.openapi()
    assert {path for _method, path in app.fast_routes} == {"/send_data", "/recommendations"}
    for (method, path), schema, answer in (
        (("POST", "/send_data"), BasketIn, "LegacyOut"),
        (("POST", "/recommendations"), RecommendationsIn, "RecommendationsOut"),
    ):
        assert isinstance(app.fast_routes[(method, path)], FastRoute)
        operation = document["paths"][path][method.lower()]
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert operation["requestBody"]["required"] and body["required"] == ["product_list"]
        assert set(body["properties"]) == set(schema.model_fields)
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(answer)
        assert set(operation["responses"]) == {"200", "401", "403", "413", "422", "429", "503"}
        assert {name for requirement in operation["security"] for name in requirement} == {
            "OAuth2PasswordBearer",
            "APIKeyHeader",
        }


def test_json_headers_are_fastjsons():
    for headers in (None, {"X-Recommendation-Id": "r1.v.-.1.00000000"}):
        response = web.FastJSON({"result": [1, "é"]}, headers=headers)
        assert json_headers(headers, len(response.body)) == response.raw_headers


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 200) | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
# Mostly bodies of product_list and n, some of them of the right types, with now and then a value or field more.
_codes = st.lists(st.text(max_size=4) | st.text(max_size=2).map(lambda t: f" {t}\u0000"), max_size=5)
_bodies = st.fixed_dictionaries(
    {"product_list": _codes | _json_values},
    optional={"n": st.integers(-1, 102) | st.booleans() | st.floats(0, 101) | _json_values, "exclude": _codes},
)


@settings(max_examples=200, deadline=None)
@given(data=_bodies | _json_values)
@example(data={"product_list": ["x"] * MAX_BASKET, "n": MAX_N})
@example(data={"product_list": ["x"] * (MAX_BASKET + 1)})
@example(data={"product_list": ["x", 1.5]})
@example(data={"product_list": ["x"], "n": 0})
def test_a_plain_basket_is_what_the_request_models_make_of_it(data):
    body = json.dumps(data).encode()
    plain = plain_basket(body)
    for schema in (BasketIn, RecommendationsIn):
        try:
            model = schema.model_validate_json(body)
        except ValidationError:
            assert plain is None
            continue
        if plain is not None:
            fields = ("product_list", "n", "user_id", "session_id")
            assert [getattr(model, f) for f in fields] == [getattr(plain, f) for f in fields]
            assert model.options(explain=False) == plain.options(False) and model.options(True) == plain.options(True)
