"""Both functions through FastAPI's TestClient: throttled logins, revoked tokens, headers, HEAD, documented errors."""

import pytest
from fastapi.testclient import TestClient

from functions.auth.app import app as auth_app
from functions.recommend.app import app as recommend_app
from recommender.core.settings import get_settings
from recommender.serving.users import add_user, change_password, delete_user


@pytest.fixture
def auth(trained_storage, user, monkeypatch):
    monkeypatch.setenv("USER_CACHE_SECONDS", "0")  # revocations seen at once
    get_settings.cache_clear()
    with TestClient(auth_app) as client:
        yield client


@pytest.fixture
def rec(auth):
    with TestClient(recommend_app) as client:
        yield client


def login(auth, username="alice", password=None, user=None):
    return auth.post("/token", data={"username": username, "password": password or user.password})


def bearer(response) -> dict:
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_sixth_wrong_password_gets_429_with_retry_after_and_one_detail(auth, user):
    for name in ("alice", "nobody"):
        for _ in range(5):
            assert login(auth, name, "wrong password").status_code == 401
        refused = login(auth, name, user.password)
        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= 900
        assert refused.json() == {
            "detail": "too many failed logins from this client: try again later (see Retry-After)"
        }


def test_a_success_clears_the_count(auth, user):
    for _ in range(3):
        for _ in range(4):
            assert login(auth, "alice", "wrong password").status_code == 401
        bearer(login(auth, user=user))


def test_limits_are_settings(auth, user, monkeypatch):
    monkeypatch.setenv("LOGIN_FAILURES_PER_USER", "2")
    get_settings.cache_clear()
    assert [login(auth, "alice", "wrong").status_code for _ in range(3)] == [401, 401, 429]


def test_password_over_4096_bytes_is_a_wrong_password(auth, user):
    response = login(auth, "alice", "x" * 5000)
    assert response.status_code == 401 and response.json() == {"detail": "incorrect username or password"}


def test_user_names_are_case_insensitive(auth, rec, user):
    headers = bearer(login(auth, "ALICE", user=user))
    assert auth.get("/users/me", headers=headers).json()["username"] == "alice"


def test_recreated_user_does_not_revive_old_tokens(auth, rec, user, trained_storage):
    old = bearer(login(auth, user=user))
    delete_user(trained_storage, "alice")
    add_user(trained_storage, "alice", user.password, rounds=4)
    for client, method, path in ((auth, "GET", "/users/me"), (rec, "POST", "/send_data")):
        refused = client.request(method, path, headers=old, json={"product_list": [], "n": 1})
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert auth.get("/users/me", headers=bearer(login(auth, user=user))).status_code == 200


def test_password_change_revokes_earlier_tokens(auth, user, trained_storage):
    old = bearer(login(auth, user=user))
    change_password(trained_storage, "alice", "a brand new password", rounds=4)
    assert auth.get("/users/me", headers=old).status_code == 401
    assert login(auth, user=user).status_code == 401
    assert auth.get("/users/me", headers=bearer(login(auth, "alice", "a brand new password"))).status_code == 200


def test_security_headers_on_every_answer(auth, rec, user):
    headers = bearer(login(auth, user=user))
    answers = [
        login(auth, user=user),
        login(auth, "alice", "wrong"),
        auth.post("/token", data={}),
        auth.get("/users/me", headers=headers),
        auth.get("/users/me"),
        rec.post("/send_data", json={"product_list": [], "n": 1}, headers=headers),
        rec.post("/send_data", content=b"x" * 70000, headers=headers),
        rec.get("/health"),
        rec.get("/items", params={"limit": 0}, headers=headers),
    ]
    assert [a.status_code for a in answers] == [200, 401, 422, 200, 401, 200, 413, 200, 422]
    assert all(a.headers["x-content-type-options"] == "nosniff" for a in answers)
    for answer in answers[:5]:  # the auth function's answers: tokens and personal details
        assert answer.headers["cache-control"] == "no-store"
    assert "cache-control" not in answers[5].headers


def test_head_is_answered_like_get(rec, user, auth):
    headers = bearer(login(auth, user=user))
    for path, extra in (("/health", {}), ("/items", headers)):
        head, get = rec.head(path, headers=extra), rec.get(path, headers=extra)
        assert head.status_code == get.status_code == 200, path
        assert head.headers["content-type"] == get.headers["content-type"]


def test_openapi_documents_every_error(auth, rec):
    for app, routes in (
        (
            auth_app,
            {
                ("post", "/token"): {"400", "401", "413", "422", "429", "503"},
                ("get", "/users/me"): {"401", "413", "503"},
            },
        ),
        (
            recommend_app,
            {
                ("post", "/send_data"): {"401", "413", "422", "503"},
                ("post", "/recommendations"): {"401", "413", "422", "503"},
                ("get", "/items"): {"401", "413", "422", "503"},
                ("get", "/health"): {"413", "503"},
            },
        ),
    ):
        spec = app.openapi()
        for (method, path), statuses in routes.items():
            responses = spec["paths"][path][method]["responses"]
            assert statuses | {"200"} <= set(responses), (path, set(responses))
            for status in statuses - {"503"} if path == "/health" else statuses:
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (path, status)
        assert "HTTPValidationError" not in spec["components"]["schemas"]
        assert spec["components"]["schemas"]["ErrorOut"]["properties"] == {
            "detail": {"title": "Detail", "type": "string"}
        }


@pytest.mark.parametrize("path", ["/send_data", "/recommendations"])
@pytest.mark.parametrize(
    "body",
    [
        {"product_list": [], "explain": False},  # options() gives None
        {"product_list": [], "price_max": 0.0, "min_confidence": 0.0},  # nothing left
        {"product_list": ["x"], "n": 3, "price_min": 0, "explain": True},
    ],
)
def test_requests_the_fuzzer_found_answer_200(rec, auth, user, path, body):
    response = rec.post(path, json=body, headers=bearer(login(auth, user=user)))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "body",
    [{"product_list": [], "price_min": False}, {"product_list": [], "n": "5"}, {"product_list": [], "explain": 1}],
)
def test_values_of_another_json_type_are_refused(rec, auth, user, body):
    response = rec.post("/recommendations", json=body, headers=bearer(login(auth, user=user)))
    assert response.status_code == 422, response.text


def test_a_storage_failure_answers_what_is_wrong_not_where(s3, monkeypatch, caplog):
    # The bucket is gone: /token and /health answer 503 without the bucket, prefix, key or endpoint; the log has them.
    monkeypatch.setenv("STORAGE_URL", "s3://deleted-bucket/pfx")
    monkeypatch.setenv("JWT_SECRET", "j" * 48)
    get_settings.cache_clear()
    with TestClient(auth_app) as auth, TestClient(recommend_app) as rec:
        answers = [
            auth.post("/token", data={"username": "alice", "password": "a password"}),
            rec.get("/health"),
            rec.post("/send_data", json={"product_list": [], "n": 1}, headers={"Authorization": "Bearer x.y.z"}),
        ]
    for answer in answers:
        detail = answer.json()["detail"]
        assert answer.status_code in (401, 503), answer.text
        for where in ("s3://", "deleted-bucket", "pfx", "users/", "alice.json", "models/", "amazonaws", "http"):
            assert where not in detail, detail
    assert answers[0].json()["detail"] == (
        "S3 read of the storage failed: NoSuchBucket (The specified bucket does not exist)"
    )
    assert "s3://deleted-bucket/pfx/users/alice.json" in caplog.text  # the operator still learns where


def test_a_degraded_health_says_what_is_wrong_not_where(rec, trained_storage, monkeypatch):
    monkeypatch.setenv("MODEL_POLL_SECONDS", "0")
    get_settings.cache_clear()
    assert rec.get("/health").json()["status"] == "ok"
    (trained_storage.root / "models" / "ACTIVE").write_text("")  # a damaged pointer, the model still in memory
    health = rec.get("/health").json()
    assert health["status"] == "degraded" and "damaged" in health["detail"]
    assert str(trained_storage.root) not in health["detail"] and "/tmp" not in health["detail"], health


# Whitespace at the very end of a header is not part of its value (RFC 9110, 5.5): HTTP drops it before any app.
@pytest.mark.parametrize("change", ["!!", "=", "==", " x", "\tx", "%20", ".", "+/"])
def test_a_token_with_anything_appended_is_refused(auth, rec, user, change):
    headers = bearer(login(auth, user=user))
    token = headers["Authorization"].removeprefix("Bearer ")
    for client, method, path in ((auth, "GET", "/users/me"), (rec, "POST", "/send_data")):
        refused = client.request(
            method, path, headers={"Authorization": f"Bearer {token}{change}"}, json={"product_list": [], "n": 1}
        )
        assert refused.status_code == 401, (change, refused.text)


def test_a_password_with_a_control_character_gets_one_clear_line(auth, user):
    response = login(auth, "alice", user.password + "\n")
    assert response.status_code == 422
    assert response.json()["detail"].startswith("the password contains a control character")
    assert login(auth, user=user).status_code == 200
