"""Every route of both functions, for every kind of answer it gives, answers what the model it declares for that
status accepts (serving/*schemas.py; undeclared fields fail); a route, or a status it declares, without a case fails."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from httpx import Response

from functions.auth.app import app as auth_app
from functions.recommend.app import app as recommend_app
from recommender.core import registry
from recommender.core.errors import StorageError
from recommender.core.feed_and_rules import SHOWN
from recommender.core.settings import get_settings
from recommender.core.storage import LocalStorage
from recommender.local.gateway import read_routes
from recommender.serving import console, web, widget
from recommender.serving.keys import add_key
from recommender.serving.merchandising import SOURCES, Options
from recommender.serving.middleware import body_limit
from recommender.serving.schemas import MAX_N, OPTION_NAMES, BasketIn, ItemOut, Out
from recommender.serving.users import add_user
from recommender.training.feed import publish_feed
from recommender.training.rules import known_from, publish_rules
from tests.conftest import ROOT

APPS = (auth_app, recommend_app)
ROUTES = {
    (method, route.path): route
    for app in APPS
    for route in app.routes
    if isinstance(route, APIRoute)
    for method in route.methods
}


class Api:
    """Both functions over TestClient, logged in as alice, with the ways to make each kind of answer happen."""

    def __init__(
        self,
        auth: TestClient,
        rec: TestClient,
        storage: LocalStorage,
        user,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self.auth, self.rec, self.storage, self.user = auth, rec, storage, user
        self.tmp_path, self.monkeypatch = tmp_path, monkeypatch
        self.version = registry.active_version(storage)
        self._headers: dict[str, str] | None = None
        self._codes: list[str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """A valid bearer token's header (logged in on first use)."""
        if self._headers is None:
            answer = self.auth.post("/token", data={"username": self.user.username, "password": self.user.password})
            assert answer.status_code == 200, answer.text
            self._headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        return self._headers

    @property
    def codes(self) -> list[str]:
        """The served model's codes, most popular first (asked on first use: the model is then loaded)."""
        if self._codes is None:
            answer = self.call("GET", "/items", params={"limit": MAX_N})
            self._codes = [item["stock_code"] for item in answer.json()["items"]]
        return self._codes

    def call(self, method: str, path: str, token: bool = True, **kwargs) -> Response:
        """A request to the function serving path (with the token unless told otherwise)."""
        client = self.auth if ROUTES[(method, path)] in auth_app.routes else self.rec
        headers = {**(self.headers if token else {}), **kwargs.pop("headers", {})}
        return client.request(method, path, headers=headers, **kwargs)

    def too_large(self, method: str, path: str) -> Response:
        """A body over the path's limit (MAX_BODY_BYTES, or EVENTS_MAX_BODY_BYTES for /events)."""
        return self.call(method, path, token=False, content=b"x" * (body_limit(path, get_settings()) + 1))

    def fail_reads(self, prefix: str) -> None:
        """Reads of storage keys under prefix fail as an unreachable storage does."""
        for name in ("read", "local_copy"):
            original = getattr(LocalStorage, name)

            def failing(storage, key, *args, _original=original, **kwargs):
                if key.startswith(prefix):
                    raise StorageError(f"storage unreachable reading {key}")
                return _original(storage, key, *args, **kwargs)

            self.monkeypatch.setattr(LocalStorage, name, failing)

    def key(self, scopes: str, rate: float = 50) -> dict[str, str]:
        """The headers of a request with a new API key of these scopes from a listed browser origin."""
        key = add_key(self.storage, f"key-{len(self.storage.list('keys/'))}", scopes, "https://shop.example.com", rate)[
            1
        ]
        self.monkeypatch.setenv("MODEL_POLL_SECONDS", "0")  # the new key seen at once
        get_settings.cache_clear()
        return {"X-API-Key": key, "Origin": "https://shop.example.com"}

    def over_rate(self, method: str, path: str, scopes: str = "recommend", **kwargs) -> Response:
        """A key's request over its rate (one a second, the first one spent)."""
        headers = self.key(scopes, rate=1)
        assert self.call(method, path, token=False, headers=headers, **kwargs).status_code == 200
        return self.call(method, path, token=False, headers=headers, **kwargs)

    def no_model(self) -> None:
        """Nothing activated (before any request loads a model)."""
        self.headers  # noqa: B018 - the token first: logging in needs no model
        assert self.storage.delete(registry.MODELS.active)

    def merchandise(self) -> None:
        """A feed giving every attribute an answer can show (to some items, a few to others), and rules that pin,
        block, boost and bury; served at once."""
        basket, others = self.codes[:2], self.codes[2:]
        rows = [
            f"{code},{('in_stock', 'preorder', 'out_of_stock')[i % 3]},{1 + i % 5} GBP,"
            f"{('Home > Mugs', 'Garden', 'Home')[i % 3]},{('Acme', 'Other')[i % 2]},Item {i},http://i/{i},"
            f"http://p/{i}"
            if i % 2
            else f"{code},,{1 + i % 5},{('Home', 'Garden')[i % 4 // 2]},,,,"
            for i, code in enumerate(others)
        ]
        feed = self.tmp_path / "feed.csv"
        feed.write_text("id,availability,price,category,brand,title,image_link,link\n" + "\n".join(rows) + "\n")
        publish_feed(self.storage, feed, progress=lambda _m: None)
        rules = self.tmp_path / "rules.yaml"
        rules.write_text(
            f"block:\n  codes: ['{others[0]}']\n"
            f"pin:\n  - {{basket: {{code: '{basket[0]}'}}, item: {{code: '{others[-2]}'}}, position: 2}}\n"
            "boost:\n  - {category: Home, factor: 1.5}\nbury:\n  - {brand: Other, factor: 0.5}\n"
        )
        publish_rules(self.storage, rules, known_from(self.codes, {}), progress=lambda _m: None)
        web.model_holder(get_settings()).refresh()


class Case(NamedTuple):
    """One kind of answer of one route: the status it must have and how to get it."""

    method: str
    path: str
    status: int
    name: str
    send: Callable[[Api], Response]


def _basket_cases(path: str) -> list[Case]:
    def post(body: dict, setup: Callable[[Api], None] | None = None, token: bool = True) -> Callable[[Api], Response]:
        def send(api: Api) -> Response:
            if setup:
                setup(api)
            return api.call(
                "POST",
                path,
                token=token,
                json={key: (api.codes[:2] if value == "CODES" else value) for key, value in body.items()},
            )

        return send

    return [
        Case("POST", path, 200, "plain", post({"product_list": "CODES", "n": 5, "explain": False})),
        Case("POST", path, 200, "explain", post({"product_list": "CODES", "n": 5, "explain": True})),
        Case("POST", path, 200, "default explain", post({"product_list": "CODES"})),
        Case(
            "POST",
            path,
            200,
            "options",
            post({"product_list": "CODES", "n": 4, "exclude": ["X"], "min_confidence": 0.0, "max_per_category": 2}),
        ),
        Case(
            "POST",
            path,
            200,
            "feed and rules, explain",
            post({"product_list": "CODES", "n": 8, "explain": True}, Api.merchandise),
        ),
        Case(
            "POST",
            path,
            200,
            "feed and rules, filtered and exhausted",
            post({"product_list": "CODES", "n": 8, "categories": ["Mugs"], "price_max": 2}, Api.merchandise),
        ),
        Case("POST", path, 200, "unknown items: popular", post({"product_list": ["NO-SUCH-ITEM"], "n": 3})),
        Case("POST", path, 200, "empty basket, explain", post({"product_list": [], "n": 3, "explain": True})),
        Case("POST", path, 401, "no token", post({"product_list": []}, token=False)),
        Case(
            "POST",
            path,
            403,
            "a key without the scope",
            lambda api: api.call("POST", path, token=False, headers=api.key("events"), json={"product_list": []}),
        ),
        Case(
            "POST",
            path,
            429,
            "a key over its rate",
            lambda api: api.over_rate("POST", path, json={"product_list": []}),
        ),
        Case("POST", path, 413, "body too large", lambda api: api.too_large("POST", path)),
        Case("POST", path, 422, "bad field", post({"product_list": "CODES", "n": 0})),
        Case("POST", path, 422, "not JSON", lambda api: api.call("POST", path, content=b"{")),
        Case("POST", path, 503, "no model", post({"product_list": []}, Api.no_model)),
        Case(
            "POST",
            path,
            503,
            "user store unreachable",
            post({"product_list": []}, lambda api: (api.headers, api.fail_reads("users/"))),
        ),
    ]


def _get(
    path: str, setup: Callable[[Api], None] | None = None, token: bool = True, **kwargs
) -> Callable[[Api], Response]:
    def send(api: Api) -> Response:
        if setup:
            setup(api)
        return api.call("GET", path, token=token, **kwargs)

    return send


def _get_with_key(path: str, scopes: str) -> Callable[[Api], Response]:
    return lambda api: api.call("GET", path, token=False, headers=api.key(scopes))


def _analytics_summary(api: Api) -> None:
    """A report's sums for a running experiment of two arms over two days."""
    from tests.serving.test_analytics import store_summary

    store_summary(api.storage)


def _without_samples(api: Api) -> None:
    """The model as trained before sample invoices were kept."""
    key = registry.artifact_key(api.version, registry.MANIFEST)
    manifest = json.loads(api.storage.read(key))
    del manifest["artifacts"][registry.SAMPLES]
    api.storage.write(key, json.dumps(manifest).encode())
    api.storage.delete(registry.artifact_key(api.version, registry.SAMPLES))


def _incomplete_version(api: Api) -> None:
    api.merchandise()
    api.storage.write(registry.artifact_key("20200101T000000000Z-deadbeef0000", "catalog.json"), b"{}")


def _wrong_manifests(api: Api) -> None:
    for day, content in enumerate((b"[]", b"5", b'"str"', b"true", b'{"artifacts": {"../../x": "00"}}'), 1):
        api.storage.write(registry.artifact_key(f"2020010{day}T000000000Z-deadbeef0000", registry.MANIFEST), content)


def _degraded(api: Api) -> None:
    api.monkeypatch.setenv("MODEL_POLL_SECONDS", "0")  # the pointer looked at on every request, as on Lambda
    get_settings.cache_clear()
    assert api.call("GET", "/health").json()["status"] == "ok"
    api.fail_reads("models/")


def _throttled(api: Api) -> Response:
    for _ in range(get_settings().login_failures_per_user):
        assert (
            api.call("POST", "/token", token=False, data={"username": "alice", "password": "wrong"}).status_code == 401
        )
    return api.call("POST", "/token", token=False, data={"username": "alice", "password": "wrong"})


def _login(password: str | None = None, setup: Callable[[Api], None] | None = None) -> Callable[[Api], Response]:
    def send(api: Api) -> Response:
        if setup:
            setup(api)
        return api.call(
            "POST", "/token", token=False, data={"username": "alice", "password": password or api.user.password}
        )

    return send


def _events(events: list, setup: Callable[[Api], None] | None = None, token: bool = True):
    def send(api: Api) -> Response:
        if setup:
            setup(api)
        return api.call("POST", "/events", token=token, json={"events": events})

    return send


def _event(event_id: str, **changes) -> dict:
    return {
        "event_id": event_id,
        "type": "view",
        "ts": "2026-12-02T10:00:00Z",
        "session_id": "s",
        "items": [{"stock_code": "A"}],
        **changes,
    }


def _log_unusable(api: Api) -> None:
    (api.storage.root / "events").mkdir()
    (api.storage.root / "events" / "raw").write_text("not a folder")


def _event_cases() -> list[Case]:
    now = int(time.time() * 1000)
    mixed = [
        _event("a", ts=now),
        _event("b", ts=now, type="x"),
        _event("a", ts=now),
        _event("c", ts=now, user_id="u", value=2.5, currency="EUR", items=[{"stock_code": "A", "price": 1}]),
    ]
    return [
        Case("POST", "/events", 200, "accepted, refused and duplicate", _events(mixed)),
        Case("POST", "/events", 401, "no token", _events(mixed, token=False)),
        Case(
            "POST",
            "/events",
            403,
            "a key without the scope",
            lambda api: api.call("POST", "/events", token=False, headers=api.key("recommend"), json={"events": mixed}),
        ),
        Case(
            "POST",
            "/events",
            429,
            "a key over its rate",
            lambda api: api.over_rate("POST", "/events", scopes="events", json={"events": mixed}),
        ),
        Case("POST", "/events", 413, "body too large", lambda api: api.too_large("POST", "/events")),
        Case("POST", "/events", 422, "not a batch", lambda api: api.call("POST", "/events", json={"event": []})),
        Case("POST", "/events", 503, "log unusable", _events([_event("a", ts=now)], _log_unusable)),
    ]


def _user_cases(path: str) -> list[Case]:
    return [
        Case("GET", path, 200, "the user", _get(path)),
        Case("GET", path, 401, "no token", _get(path, token=False)),
        Case("GET", path, 401, "bad token", _get(path, token=False, headers={"Authorization": "Bearer a.b.c"})),
        Case("GET", path, 413, "body too large", lambda api: api.too_large("GET", path)),
        Case(
            "GET",
            path,
            503,
            "user store unreachable",
            _get(
                path,
                lambda api: (
                    api.monkeypatch.setenv("USER_CACHE_SECONDS", "0"),
                    get_settings.cache_clear(),
                    api.headers,
                    api.fail_reads("users/"),
                ),
            ),
        ),
    ]


def _console_cases(path: str) -> list[Case]:
    def unchanged(api: Api) -> Response:
        etag = api.call("GET", path, token=False).headers["etag"]
        return api.call("GET", path, token=False, headers={"If-None-Match": etag})

    return [Case("GET", path, 200, "the file", _get(path, token=False)), Case("GET", path, 304, "unchanged", unchanged)]


def _as_viewer(api: Api) -> dict[str, str]:
    """The headers of a viewer's token (a user who may read, and change nothing)."""
    add_user(api.storage, "vera", "viewer password", rounds=4, role="viewer")
    answer = api.auth.post("/token", data={"username": "vera", "password": "viewer password"})
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _draft(api: Api) -> dict:
    return {
        "rules": {
            "block": {"codes": [api.codes[3]]},
            "pin": [{"basket": {"code": api.codes[0]}, "item": {"code": api.codes[5]}}],
        }
    }


def _rules_cases() -> list[Case]:
    def post(path: str, body: Callable[[Api], object], setup=None, token: bool = True, viewer: bool = False):
        def send(api: Api) -> Response:
            if setup:
                setup(api)
            headers = _as_viewer(api) if viewer else {}
            return api.call("POST", path, token=token, json=body(api), headers=headers)

        return send

    bad = {"rules": {"pin": [{"basket": {"code": "A"}, "item": {"code": "B"}, "position": 0}]}}
    cases = [
        Case("GET", "/rules", 200, "none yet", _get("/rules")),
        Case("GET", "/rules", 200, "the active rules", _get("/rules", Api.merchandise)),
        Case("GET", "/rules", 401, "no token", _get("/rules", token=False)),
        Case("GET", "/rules", 403, "an API key", _get_with_key("/rules", "recommend")),
        Case("POST", "/rules/check", 200, "a good draft", post("/rules/check", _draft)),
        Case("POST", "/rules/check", 200, "a wrong draft", post("/rules/check", lambda api: bad)),
        Case("POST", "/rules/check", 200, "a draft as YAML", post("/rules/check", lambda api: {"yaml": "pin: [1"})),
        Case(
            "POST",
            "/rules/check",
            200,
            "YAML beyond JSON",
            post(
                "/rules/check", lambda api: {"yaml": "pin: [.nan, 2026-01-02]\nblock: !!binary aGk=\nbury: !!set {a}"}
            ),
        ),
        Case(
            "POST", "/rules/check", 422, "rules and yaml", post("/rules/check", lambda api: {"rules": {}, "yaml": ""})
        ),
        Case("POST", "/rules/preview", 200, "the changes", post("/rules/preview", _draft)),
        Case("POST", "/rules/preview", 200, "over rules in force", post("/rules/preview", _draft, Api.merchandise)),
        Case("POST", "/rules/preview", 422, "a wrong draft", post("/rules/preview", lambda api: bad)),
        Case("POST", "/rules", 200, "published", post("/rules", _draft)),
        Case("POST", "/rules", 413, "body too large", lambda api: api.too_large("POST", "/rules")),
        Case("POST", "/rules", 422, "a wrong draft", post("/rules", lambda api: bad)),
        Case(
            "POST",
            "/rules/rollback",
            200,
            "rolled back",
            post(
                "/rules/rollback",
                lambda api: None,
                lambda api: (api.merchandise(), api.call("POST", "/rules", json=_draft(api))),
            ),
        ),
        Case("POST", "/rules/rollback", 409, "no rules in force", post("/rules/rollback", lambda api: None)),
    ]
    for path in ("/rules/check", "/rules/preview", "/rules", "/rules/rollback"):
        cases += [
            Case("POST", path, 401, "no token", post(path, _draft, token=False)),
            Case("POST", path, 403, "a viewer", post(path, _draft, viewer=True)),
        ]
    for path in ("/rules/check", "/rules/preview"):
        cases += [
            Case("POST", path, 422, "not a document", post(path, lambda api: {"rules": [1]})),
            Case("POST", path, 503, "no model", post(path, lambda api: {"rules": {}}, Api.no_model)),
        ]

    def users_unreachable(api: Api) -> None:
        api.monkeypatch.setenv("USER_CACHE_SECONDS", "0")
        get_settings.cache_clear()
        api.headers  # noqa: B018 - logged in first
        api.fail_reads("users/")

    cases.append(Case("GET", "/rules", 503, "user store unreachable", _get("/rules", users_unreachable)))
    for path in ("/rules", "/rules/rollback"):
        cases.append(
            Case("POST", path, 503, "user store unreachable", post(path, lambda api: {"rules": {}}, users_unreachable))
        )
    return cases


COPY = "20990101T000000000Z-deadbeefcafe"


def _copy_of_active(api: Api, measured: bool = True) -> str:
    """A second model version, the active one's files under another name (without its held-out figures unless
    measured: the gate then refuses it)."""
    prefix = registry.artifact_key(api.version, "")
    for key in api.storage.list(prefix):
        data = api.storage.read(key)
        if key.endswith(registry.MANIFEST) and not measured:
            manifest = json.loads(data)
            manifest.pop("evaluation", None)
            manifest["artifacts"].pop("holdout.json.gz", None)
            data = json.dumps(manifest).encode()
        api.storage.write(registry.artifact_key(COPY, key[len(prefix) :]), data)
    return COPY


def _staged(measured: bool) -> Callable[[Api], None]:
    return lambda api: registry.stage(api.storage, _copy_of_active(api, measured))


def _versions_cases() -> list[Case]:
    def post(path: str, body: object, setup=None, token: bool = True, viewer: bool = False):
        def send(api: Api) -> Response:
            if setup:
                setup(api)
            headers = _as_viewer(api) if viewer else {}
            return api.call("POST", path, token=token, json=body, headers=headers)

        return send

    def activated_before(api: Api) -> None:
        registry.activate(api.storage, _copy_of_active(api), notify=lambda _m: None)

    def users_unreachable(api: Api) -> None:
        api.monkeypatch.setenv("USER_CACHE_SECONDS", "0")
        get_settings.cache_clear()
        api.headers  # noqa: B018 - logged in first
        api.fail_reads("users/")

    cases = [
        Case("GET", "/versions", 200, "the versions", _get("/versions")),
        Case(
            "GET",
            "/versions",
            200,
            "staged, feed and rules",
            _get("/versions", lambda api: (api.merchandise(), _staged(False)(api))),
        ),
        Case("GET", "/versions", 401, "no token", _get("/versions", token=False)),
        Case("GET", "/versions", 403, "an API key", _get_with_key("/versions", "recommend")),
        Case("GET", "/versions", 503, "user store unreachable", _get("/versions", users_unreachable)),
        Case("POST", "/versions/promote", 200, "promoted", post("/versions/promote", {}, _staged(True))),
        Case(
            "POST",
            "/versions/promote",
            200,
            "forced by an admin",
            post("/versions/promote", {"force": True}, _staged(False)),
        ),
        Case("POST", "/versions/promote", 409, "refused by the gate", post("/versions/promote", {}, _staged(False))),
        Case("POST", "/versions/promote", 422, "an unknown field", post("/versions/promote", {"forced": True})),
        Case(
            "POST",
            "/versions/activate",
            200,
            "activated",
            post("/versions/activate", {"version": COPY}, lambda api: _copy_of_active(api)),
        ),
        Case("POST", "/versions/activate", 404, "no such version", post("/versions/activate", {"version": "1999"})),
        Case(
            "POST",
            "/versions/activate",
            409,
            "refused by the gate",
            post("/versions/activate", {"version": COPY}, lambda api: _copy_of_active(api, False)),
        ),
        Case("POST", "/versions/activate", 422, "no version", post("/versions/activate", {})),
        Case("POST", "/versions/rollback", 200, "rolled back", post("/versions/rollback", None, activated_before)),
        Case("POST", "/versions/rollback", 409, "nothing earlier", post("/versions/rollback", None)),
    ]
    for path, body in (
        ("/versions/promote", {}),
        ("/versions/activate", {"version": COPY}),
        ("/versions/rollback", None),
    ):
        cases += [
            Case("POST", path, 401, "no token", post(path, body, token=False)),
            Case("POST", path, 403, "a viewer", post(path, body, viewer=True)),
            Case("POST", path, 503, "user store unreachable", post(path, body, users_unreachable)),
        ]
    return cases


def _feed_file(api: Api) -> bytes:
    """A feed of the served model's first items, one out of stock, one price doubled against api.merchandise's."""
    rows = [
        f"{code},{'out_of_stock' if i == 0 else 'in_stock'},{2 + i % 5} GBP" for i, code in enumerate(api.codes[:6])
    ]
    return ("id,availability,price\n" + "\n".join(rows) + "\n").encode()


def _feed_cases() -> list[Case]:
    def post(path: str, body=None, name: str = "feed.csv", setup=None, token: bool = True, viewer: bool = False):
        def send(api: Api) -> Response:
            if setup:
                setup(api)
            headers = _as_viewer(api) if viewer else {}
            content = body(api) if callable(body) else body
            return api.call("POST", path, token=token, content=content, params={"name": name}, headers=headers)

        return send

    def users_unreachable(api: Api) -> None:
        api.monkeypatch.setenv("USER_CACHE_SECONDS", "0")
        get_settings.cache_clear()
        api.headers  # noqa: B018 - logged in first
        api.fail_reads("users/")

    bad = b"id,availability\nA,maybe\n"
    cases = [
        Case("POST", "/feed/preview", 200, "the first feed", post("/feed/preview", _feed_file)),
        Case("POST", "/feed/preview", 200, "changes", post("/feed/preview", _feed_file, setup=Api.merchandise)),
        Case("POST", "/feed/preview", 413, "body too large", lambda api: api.too_large("POST", "/feed/preview")),
        Case("POST", "/feed/preview", 422, "a bad line", post("/feed/preview", bad)),
        Case("POST", "/feed/preview", 422, "a spreadsheet", post("/feed/preview", b"PK", name="feed.xlsx")),
        Case("POST", "/feed", 200, "published", post("/feed", _feed_file)),
        Case("POST", "/feed", 413, "body too large", lambda api: api.too_large("POST", "/feed")),
        Case("POST", "/feed", 422, "a bad line", post("/feed", bad)),
        Case(
            "POST",
            "/feed/rollback",
            200,
            "rolled back",
            post(
                "/feed/rollback",
                setup=lambda api: (
                    api.merchandise(),
                    api.call("POST", "/feed", content=_feed_file(api), params={"name": "f.csv"}),
                ),
            ),
        ),
        Case("POST", "/feed/rollback", 409, "nothing earlier", post("/feed/rollback")),
    ]
    for path in ("/feed/preview", "/feed", "/feed/rollback"):
        cases += [
            Case("POST", path, 401, "no token", post(path, b"id\n1\n", token=False)),
            Case("POST", path, 403, "a viewer", post(path, b"id\n1\n", viewer=True)),
            Case("POST", path, 503, "user store unreachable", post(path, b"id\n1\n", setup=users_unreachable)),
        ]
    return cases


def _earlier_versions_cases() -> list[Case]:
    """Activating an earlier feed or rules version (the Versions page)."""

    def first_of(kind: registry.Kind) -> Callable[[Api], str]:
        return lambda api: registry.list_versions(api.storage, kind)[0]

    def two_versions(api: Api) -> None:
        api.merchandise()
        api.call("POST", "/rules", json=_draft(api))
        api.call("POST", "/feed", content=_feed_file(api), params={"name": "f.csv"})

    def damaged(kind: registry.Kind) -> Callable[[Api], None]:
        def setup(api: Api) -> None:
            two_versions(api)
            version = registry.list_versions(api.storage, kind)[0]
            for key in api.storage.list(registry.artifact_key(version, "", kind)):
                if not key.endswith(registry.MANIFEST):
                    api.storage.write(key, b"damaged")

        return setup

    def users_unreachable(api: Api) -> None:
        api.monkeypatch.setenv("USER_CACHE_SECONDS", "0")
        get_settings.cache_clear()
        api.headers  # noqa: B018 - logged in first
        api.fail_reads("users/")

    def post(path: str, version=None, setup=None, token: bool = True, viewer: bool = False):
        def send(api: Api) -> Response:
            if setup:
                setup(api)
            headers = _as_viewer(api) if viewer else {}
            body = {"version": version(api) if callable(version) else version} if version is not None else {}
            return api.call("POST", path, token=token, json=body, headers=headers)

        return send

    cases = []
    for path, kind in (("/rules/activate", registry.RULES), ("/feed/activate", registry.FEED)):
        cases += [
            Case("POST", path, 200, "activated", post(path, first_of(kind), two_versions)),
            Case("POST", path, 401, "no token", post(path, "1999", token=False)),
            Case("POST", path, 403, "a viewer", post(path, "1999", viewer=True)),
            Case("POST", path, 404, "no such version", post(path, "1999")),
            Case("POST", path, 409, "damaged", post(path, first_of(kind), damaged(kind))),
            Case("POST", path, 413, "body too large", lambda api, path=path: api.too_large("POST", path)),
            Case("POST", path, 422, "no version", post(path)),
            Case("POST", path, 503, "user store unreachable", post(path, "1999", users_unreachable)),
        ]
    return cases


def _preflight_cases(path: str, scope: str = "recommend") -> list[Case]:
    def preflight(origin: str, setup: Callable[[Api], None] | None = None) -> Callable[[Api], Response]:
        def send(api: Api) -> Response:
            api.key(scope)
            if setup:
                setup(api)
            return api.call(
                "OPTIONS", path, token=False, headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
            )

        return send

    return [
        Case("OPTIONS", path, 204, "a listed origin", preflight("https://shop.example.com")),
        Case("OPTIONS", path, 403, "an unlisted origin", preflight("https://evil.example.com")),
        Case(
            "OPTIONS",
            path,
            503,
            "key store unreachable",
            preflight("https://shop.example.com", lambda api: api.fail_reads("keys/")),
        ),
    ]


CASES = [
    Case("POST", "/token", 200, "a token", _login()),
    Case(
        "POST",
        "/token",
        400,
        "unparsable form",
        lambda api: api.call(
            "POST",
            "/token",
            token=False,
            content=b"garbage",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        ),
    ),
    Case("POST", "/token", 401, "wrong password", _login("wrong")),
    Case("POST", "/token", 413, "body too large", lambda api: api.too_large("POST", "/token")),
    Case(
        "POST",
        "/token",
        422,
        "no password",
        lambda api: api.call("POST", "/token", token=False, data={"username": "alice"}),
    ),
    Case("POST", "/token", 429, "too many failures", _throttled),
    Case("POST", "/token", 503, "user store unreachable", _login(setup=lambda api: api.fail_reads("users/"))),
    *_user_cases("/users/me"),
    *_user_cases("/users/me/"),
    *_basket_cases("/send_data"),
    *_basket_cases("/recommendations"),
    *_event_cases(),
    Case("GET", "/items", 200, "popular", _get("/items")),
    Case("GET", "/items", 200, "search", lambda api: api.call("GET", "/items", params={"q": api.codes[0][:3]})),
    Case("GET", "/items", 200, "nothing found", _get("/items", params={"q": "no such thing at all"})),
    Case("GET", "/items", 401, "no token", _get("/items", token=False)),
    Case("GET", "/items", 403, "a key without the scope", _get_with_key("/items", "events")),
    Case("GET", "/items", 429, "a key over its rate", lambda api: api.over_rate("GET", "/items")),
    Case("GET", "/items", 413, "body too large", lambda api: api.too_large("GET", "/items")),
    Case("GET", "/items", 422, "bad limit", _get("/items", params={"limit": 0})),
    Case("GET", "/items", 503, "no model", _get("/items", Api.no_model)),
    Case("GET", "/health", 200, "ok", _get("/health", token=False)),
    Case("GET", "/health", 200, "ok, feed and rules", _get("/health", Api.merchandise, token=False)),
    Case("GET", "/health", 200, "degraded", _get("/health", _degraded, token=False)),
    Case("GET", "/health", 413, "body too large", lambda api: api.too_large("GET", "/health")),
    Case("GET", "/health", 503, "no model", _get("/health", Api.no_model, token=False)),
    Case("GET", "/sample_basket", 200, "an invoice", _get("/sample_basket")),
    Case("GET", "/sample_basket", 401, "no token", _get("/sample_basket", token=False)),
    Case("GET", "/sample_basket", 403, "an API key", _get_with_key("/sample_basket", "recommend")),
    Case("GET", "/sample_basket", 404, "no invoices kept", _get("/sample_basket", _without_samples)),
    Case("GET", "/sample_basket", 413, "body too large", lambda api: api.too_large("GET", "/sample_basket")),
    Case("GET", "/sample_basket", 503, "no model", _get("/sample_basket", Api.no_model)),
    Case("GET", "/model", 200, "the model", _get("/model")),
    Case("GET", "/model", 200, "feed, rules and an incomplete version", _get("/model", _incomplete_version)),
    Case("GET", "/model", 200, "manifests that are not objects or name a path", _get("/model", _wrong_manifests)),
    Case("GET", "/model", 401, "no token", _get("/model", token=False)),
    Case("GET", "/model", 403, "an API key", _get_with_key("/model", "recommend")),
    Case("GET", "/model", 413, "body too large", lambda api: api.too_large("GET", "/model")),
    Case("GET", "/model", 503, "no model", _get("/model", Api.no_model)),
    *_rules_cases(),
    *_versions_cases(),
    *_feed_cases(),
    *_earlier_versions_cases(),
    Case("GET", "/analytics", 200, "before any report", _get("/analytics")),
    Case("GET", "/analytics", 200, "an experiment", _get("/analytics", _analytics_summary)),
    Case("GET", "/analytics", 401, "no token", _get("/analytics", token=False)),
    Case("GET", "/analytics", 403, "an API key", _get_with_key("/analytics", "recommend")),
    Case("GET", "/analytics", 404, "no such experiment", _get("/analytics", params={"experiment": "nope"})),
    Case("GET", "/analytics", 413, "body too large", lambda api: api.too_large("GET", "/analytics")),
    Case("GET", "/analytics", 422, "a bad experiment name", _get("/analytics", params={"experiment": "a b"})),
    *(case for path in console.FILES for case in _console_cases(path)),
    *_console_cases("/widget.js"),
    *(case for path in ("/send_data", "/recommendations", "/items") for case in _preflight_cases(path)),
    *_preflight_cases("/events", "events"),
]
# The body limit applies to every route: the console's routes are checked for it too.
_WORKPLACE_ROUTES = [
    ("GET", "/rules"),
    *(("POST", path) for path in ("/rules/check", "/rules/preview", "/rules/rollback", "/feed", "/feed/rollback")),
    ("GET", "/versions"),
    *(("POST", path) for path in ("/versions/promote", "/versions/activate", "/versions/rollback")),
]
CASES += [
    Case(method, path, 413, "body too large", lambda api, method=method, path=path: api.too_large(method, path))
    for method, path in _WORKPLACE_ROUTES
    if not any((c.method, c.path, c.status) == (method, path, 413) for c in CASES)
]


def test_every_route_and_every_status_it_declares_has_a_case():
    assert set(ROUTES) == {(r.method, r.path) for r in read_routes(ROOT / "template.yaml")}
    covered: dict[tuple[str, str], set[int]] = defaultdict(set)
    for case in CASES:
        covered[(case.method, case.path)].add(case.status)
    assert set(covered) == set(ROUTES), "routes without a case, or cases of no route"
    for key, route in ROUTES.items():
        declared = {route.status_code or 200} | {int(status) for status in route.responses}
        assert declared <= covered[key], f"{key}: no case answers {declared - covered[key]}"


@pytest.fixture
def api(trained_storage, user, tmp_path, monkeypatch):
    with TestClient(auth_app) as auth, TestClient(recommend_app) as rec:
        yield Api(auth, rec, trained_storage, user, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method} {c.path} {c.status} {c.name}" for c in CASES])
def test_answers_validate_against_the_declared_model(api, case):
    response = case.send(api)
    assert response.status_code == case.status, response.text
    route = ROUTES[(case.method, case.path)]
    if route.response_model is None and case.method == "OPTIONS":  # a preflight: no body when it passes
        if case.status == route.status_code:
            assert response.content == b"" and "content-type" not in response.headers
            return
    elif route.response_model is None:  # the console's files and the widget's: not JSON, and declared as nothing else
        media_type = widget.MEDIA_TYPE if case.path == widget.PATH else console.FILES[case.path][1]
        assert response.headers.get("content-type") == (media_type if case.status == 200 else None)
        return
    if case.status == (route.status_code or 200):
        model = route.response_model
    else:
        assert case.status in route.responses, f"{case.path} answers {case.status}, which it does not declare"
        model = route.responses[case.status]["model"]
    assert issubclass(model, Out)  # forbids undeclared fields
    model.model_validate_json(response.content)


def test_request_options_are_the_options_of_an_answer():
    options = {f.name for f in dataclasses.fields(Options)}
    assert set(OPTION_NAMES) == options - {"explain"}
    assert set(OPTION_NAMES) | {"explain"} <= set(BasketIn.model_fields)
    everything = BasketIn(
        product_list=[],
        exclude=[" A "],
        categories=["Home"],
        exclude_categories=["Garden"],
        price_min=1,
        price_max=2,
        max_price_ratio=3,
        min_confidence=0.5,
        max_per_category=2,
    )
    assert everything.options(explain=False) == Options(
        exclude=("A",),
        categories=("Home",),
        exclude_categories=("Garden",),
        price_min=1,
        price_max=2,
        max_price_ratio=3,
        min_confidence=0.5,
        max_per_category=2,
    )
    assert BasketIn(product_list=[]).options(explain=False) is None


def test_an_answered_item_declares_what_the_feed_and_the_sources_can_say():
    assert tuple(ItemOut.model_fields)[-len(SHOWN) :] == SHOWN
    source = ItemOut.model_fields["source"].annotation
    assert get_args(get_args(source)[0]) == SOURCES and get_args(source)[0].__origin__ is Literal
