"""Both functions through FastAPI's TestClient: every endpoint and every error the API promises."""

import base64
import json
import time

import jwt
import pytest
from fastapi.testclient import TestClient

from functions.auth.app import app as auth_app
from functions.recommend.app import app as recommend_app
from recommender.core import registry
from recommender.core.items import Items
from recommender.core.settings import get_settings
from recommender.serving import web
from recommender.serving.tokens import issue_token, load_secret
from recommender.serving.users import delete_user


@pytest.fixture
def auth(trained_storage, user):
    with TestClient(auth_app) as client:
        yield client


@pytest.fixture
def rec(trained_storage, user):
    with TestClient(recommend_app) as client:
        yield client


@pytest.fixture
def token(auth, user):
    response = auth.post("/token", data={"username": user.username, "password": user.password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture
def headers(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def items(trained_storage):
    version = registry.active_version(trained_storage)
    return Items.from_json(trained_storage.read(registry.artifact_key(version, "catalog.json")))


# --- auth -----------------------------------------------------------------------------------------------


def test_token_is_a_bearer_jwt(auth, user, token):
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "alice" and {"iat", "exp", "jti"} <= set(claims)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert claims["exp"] - claims["iat"] == get_settings().token_minutes * 60


@pytest.mark.parametrize(
    "form",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "nobody", "password": "x"},
        {"username": "../../etc", "password": "x"},
    ],
)
def test_bad_credentials_401(auth, form):
    response = auth.post("/token", data=form)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "incorrect username or password"}


def test_token_without_form_fields_422(auth):
    response = auth.post("/token", data={"username": "alice"})
    assert response.status_code == 422
    assert "password" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/users/me", "/users/me/"])
def test_users_me(auth, headers, path):
    response = auth.get(path, headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "username": "alice",
        "full_name": "Alice Liddell",
        "email": "alice@example.com",
        "role": "admin",  # what a user made without a role is
        "rights": ["rules", "feed", "promote", "force", "users"],
    }


def test_secret_is_not_in_the_code_and_shared(trained_storage, token):
    secret = load_secret(get_settings(), trained_storage)
    assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == "alice"
    assert (trained_storage.root / "secrets/jwt_secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("value", ["", "Bearer", "Bearer ", "Bearer garbage", "Basic YWxpY2U6cHc=", "bearer a.b.c"])
def test_malformed_authorization_401(auth, rec, value):
    for client, method, path in ((auth, "GET", "/users/me"), (rec, "POST", "/send_data")):
        response = client.request(method, path, headers={"Authorization": value}, json={"product_list": [], "n": 1})
        assert response.status_code == 401, (path, value)
        assert response.headers["www-authenticate"] == "Bearer"


def test_expired_token_401(auth, trained_storage):
    secret = load_secret(get_settings(), trained_storage)
    old = issue_token("alice", secret, minutes=1, clock=lambda: time.time() - 120)
    response = auth.get("/users/me", headers={"Authorization": f"Bearer {old}"})
    assert response.status_code == 401 and response.json()["detail"] == "token expired"


def _unsigned(claims: dict) -> str:
    part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_alg_none_and_other_algorithms_401(auth, trained_storage):
    secret = load_secret(get_settings(), trained_storage)
    claims = {"sub": "alice", "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": "x"}
    forged = [
        jwt.encode(claims, secret, algorithm="HS512"),
        jwt.encode(claims, "another-secret-of-enough-length-0123456789", algorithm="HS256"),
        _unsigned(claims),
    ]
    for token in forged:
        assert auth.get("/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_deleted_user_token_refused(monkeypatch, auth, rec, headers, trained_storage):
    monkeypatch.setenv("USER_CACHE_SECONDS", "0")
    get_settings.cache_clear()
    web.reset_resources()
    assert auth.get("/users/me", headers=headers).status_code == 200
    delete_user(trained_storage, "alice")
    response = auth.get("/users/me", headers=headers)
    assert response.status_code == 401
    assert rec.post("/send_data", headers=headers, json={"product_list": [], "n": 1}).status_code == 401


# --- recommend ------------------------------------------------------------------------------------------


def test_send_data_keeps_the_original_contract(rec, headers, items):
    basket = [items.codes[i] for i in items.most_popular()[:2]]
    response = rec.post("/send_data", headers=headers, json={"product_list": basket, "n": 5})
    assert response.status_code == 200
    rows = response.json()["result"]["recommendation"]
    assert len(rows) == 5
    codes = [r[0] for r in rows]
    assert len(set(codes)) == 5 and not set(codes) & set(basket)
    for code, description, score in rows:
        assert description == items.descriptions[items.index[code]]
        assert isinstance(score, float)
    scores = [r[2] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_n_larger_than_the_items_gives_what_there_is(rec, headers, items):
    basket = items.codes[:3]
    rows = rec.post("/send_data", headers=headers, json={"product_list": basket, "n": 100}).json()
    codes = [r[0] for r in rows["result"]["recommendation"]]
    assert len(codes) == min(100, len(items) - 3) and not set(codes) & set(basket)


def test_recommendations_self_describing(rec, headers, items):
    code = items.codes[0]
    body = rec.post("/recommendations", headers=headers, json={"product_list": [code, "NOPE", code], "n": 3}).json()
    assert body["unknown_codes"] == ["NOPE"] and body["fallback"] is False
    assert body["model_version"] == registry.active_version(web.model_holder(get_settings()).storage)
    assert (
        all({"stock_code", "description", "score", "confidence", "source", "because"} <= set(i) for i in body["items"])
        and len(body["items"]) == 3
    )
    assert body["exhausted"] is False and body["feed_version"] is None and body["rules_version"] is None


@pytest.mark.parametrize("basket", [[], ["NOPE", "ALSO-NOPE"]])
def test_empty_or_unknown_basket_falls_back_to_popular(rec, headers, items, basket):
    body = rec.post("/recommendations", headers=headers, json={"product_list": basket, "n": 4}).json()
    assert body["fallback"] is True
    assert [i["stock_code"] for i in body["items"]] == [items.codes[i] for i in items.most_popular()[:4]]
    assert body["unknown_codes"] == basket
    legacy = rec.post("/send_data", headers=headers, json={"product_list": basket, "n": 4}).json()
    assert len(legacy["result"]["recommendation"]) == 4


def test_missing_n_defaults_to_5(rec, headers, items):
    rows = rec.post("/send_data", headers=headers, json={"product_list": [items.codes[0]]}).json()
    assert len(rows["result"]["recommendation"]) == 5


def test_json_without_content_type_accepted(rec, headers, items):
    response = rec.post("/send_data", headers=headers, content=f'{{"product_list": ["{items.codes[0]}"], "n": 2}}')
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body, message",
    [
        ({"product_list": ["x"], "n": 0}, "n: Input should be greater than or equal to 1"),
        ({"product_list": ["x"], "n": 101}, "n: Input should be less than or equal to 100"),
        ({"product_list": ["x"], "n": 100000}, "n: Input should be less than or equal to 100"),
        ({"product_list": "85123A", "n": 5}, "product_list: Input should be a valid array"),
        ({"product_list": [85123, "x"], "n": 5}, "product_list.0: Input should be a valid string"),
        ({"product_list": [None], "n": 5}, "product_list.0: Input should be a valid string"),
        ({"product_list": ["x"] * 1001, "n": 5}, "product_list: List should have at most 1000 items"),
        ({"n": 5}, "product_list: Field required"),
        ({"product_list": ["x"], "n": "five"}, "n: Input should be a valid integer"),
        ([1, 2], "Input should be an object"),
    ],
)
def test_bad_requests_422_with_a_message(rec, headers, body, message):
    response = rec.post("/send_data", headers=headers, json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    "raw, message",
    [
        ('{"product_list": ["x"], "n": 5', "not valid JSON"),
        ("", "body is empty"),
        ("product_list=x", "not valid JSON"),
    ],
)
def test_invalid_json_422(rec, headers, raw, message):
    response = rec.post("/send_data", headers={**headers, "Content-Type": "application/json"}, content=raw)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_body_over_the_limit_413(rec, headers):
    big = '{"product_list": ["' + "x" * 70_000 + '"], "n": 5}'
    response = rec.post("/send_data", headers=headers, content=big)
    assert response.status_code == 413 and "larger than the limit" in response.json()["detail"]

    def chunks():
        for _ in range(20):
            yield b"x" * 10_000

    response = rec.post("/send_data", headers=headers, content=chunks())
    assert response.status_code == 413


def test_every_endpoint_but_health_needs_a_token(rec):
    assert rec.post("/send_data", json={"product_list": [], "n": 1}).status_code == 401
    assert rec.post("/recommendations", json={"product_list": [], "n": 1}).status_code == 401
    assert rec.get("/items?q=a").status_code == 401
    assert rec.get("/health").status_code == 200


def test_health(rec, trained_storage, items):
    body = rec.get("/health").json()
    assert body["status"] == "ok"
    assert body["model_version"] == registry.active_version(trained_storage)
    assert body["item_count"] == len(items)


def test_items_search(rec, headers, items):
    code = items.codes[5]
    found = rec.get("/items", params={"q": code[:4], "limit": 50}, headers=headers).json()["items"]
    assert code in [i["stock_code"] for i in found]
    assert all(i["stock_code"].startswith(code[:4]) for i in found[:1])
    word = items.descriptions[5].split()[0]
    by_word = rec.get("/items", params={"q": word.lower(), "limit": 5}, headers=headers).json()["items"]
    assert by_word and all(word in i["description"] for i in by_word)
    assert rec.get("/items", params={"limit": 0}, headers=headers).status_code == 422
    assert len(rec.get("/items", params={"limit": 3}, headers=headers).json()["items"]) == 3


def test_no_model_503_with_how_to(monkeypatch, tmp_path, headers, rec):
    monkeypatch.setenv("STORAGE_URL", str(tmp_path / "empty"))
    get_settings.cache_clear()
    web.reset_resources()
    health = rec.get("/health")
    assert health.status_code == 503 and "make train" in health.json()["detail"]


def test_password_hashes_never_logged(auth, rec, headers, user, caplog, capsys):
    caplog.set_level("DEBUG")
    auth.post("/token", data={"username": user.username, "password": user.password})
    rec.post("/send_data", headers=headers, json={"product_list": [], "n": 2})
    out = caplog.text + capsys.readouterr().out
    assert user.password not in out and "$bcrypt" not in out
