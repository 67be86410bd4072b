"""The Lambda handlers, invoked with API Gateway HTTP API (payload v2.0) events through Mangum, on S3 (moto)."""

import base64
import json
import sys

import pytest

from recommender import registry, web
from recommender.catalog import Catalog
from recommender.settings import get_settings
from recommender.storage import S3Storage
from recommender.training import train
from recommender.users import add_user

from .conftest import BUCKET, PASSWORD


@pytest.fixture
def s3_deployment(s3, monkeypatch, tiny_csv, tmp_path):
    """Users and a model in a moto bucket, and the functions configured as template.yaml configures them."""
    storage = S3Storage(s3, BUCKET, "recommender", cache_dir=str(tmp_path / "seed-cache"))
    version = train(tiny_csv, storage, progress=lambda _m: None).version
    add_user(storage, "alice", PASSWORD, "Alice Liddell", "alice@example.com", rounds=4)
    monkeypatch.setenv("STORAGE_URL", f"s3://{BUCKET}/recommender")
    monkeypatch.setenv("JWT_SECRET", "j" * 48)
    get_settings.cache_clear()
    web.reset_resources()
    catalog = Catalog.from_json(storage.read(registry.artifact_key(version, "catalog.json")))
    return storage, version, catalog


@pytest.fixture
def handlers():
    from functions.auth.app import handler as auth_handler
    from functions.recommend.app import handler as recommend_handler
    return auth_handler, recommend_handler


def body(response: dict) -> dict:
    raw = response["body"]
    return json.loads(base64.b64decode(raw) if response.get("isBase64Encoded") else raw)


def with_token(ev: dict, token: str) -> dict:
    ev["headers"]["authorization"] = f"Bearer {token}"
    return ev


@pytest.fixture
def token(s3_deployment, handlers, event, lambda_context):
    response = handlers[0](event("token"), lambda_context)
    assert response["statusCode"] == 200, response
    return body(response)["access_token"]


def test_token_and_users_me(token, handlers, event, lambda_context):
    response = handlers[0](with_token(event("users_me"), token), lambda_context)
    assert response["statusCode"] == 200
    assert body(response)["full_name"] == "Alice Liddell"


def test_send_data(s3_deployment, token, handlers, event, lambda_context):
    _, version, catalog = s3_deployment
    ev = with_token(event("send_data"), token)
    code = catalog.codes[catalog.most_popular()[0]]
    ev["body"] = ev["body"].replace("REPLACE_WITH_CODE", code)
    response = handlers[1](ev, lambda_context)
    assert response["statusCode"] == 200
    rows = body(response)["result"]["recommendation"]
    assert len(rows) == 5 and code not in [r[0] for r in rows]


def test_recommendations_and_items(s3_deployment, token, handlers, event, lambda_context):
    _, version, catalog = s3_deployment
    ev = with_token(event("recommendations"), token)
    ev["body"] = ev["body"].replace("REPLACE_WITH_CODE", catalog.codes[0])
    answer = body(handlers[1](ev, lambda_context))
    assert answer["model_version"] == version and answer["unknown_codes"] == ["NOT-A-CODE"]
    items = handlers[1](with_token(event("items"), token), lambda_context)
    assert items["statusCode"] == 200 and len(body(items)["items"]) <= 5


def test_health(s3_deployment, handlers, event, lambda_context):
    _, version, catalog = s3_deployment
    answer = body(handlers[1](event("health"), lambda_context))
    assert answer["status"] == "ok" and answer["model_version"] == version and answer["item_count"] == len(catalog)


def test_401_without_or_with_bad_token(s3_deployment, handlers, event, lambda_context):
    ev = event("send_data")
    del ev["headers"]["authorization"]
    response = handlers[1](ev, lambda_context)
    assert response["statusCode"] == 401 and response["headers"]["www-authenticate"] == "Bearer"
    assert handlers[0](event("users_me"), lambda_context)["statusCode"] == 401  # "Bearer REPLACE_WITH_TOKEN"
    bad_login = event("token", body="username=alice&password=wrong")
    assert handlers[0](bad_login, lambda_context)["statusCode"] == 401


def test_422(s3_deployment, token, handlers, event, lambda_context):
    ev = with_token(event("send_data"), token)
    ev["body"] = json.dumps({"product_list": "85123A", "n": 0})
    response = handlers[1](ev, lambda_context)
    assert response["statusCode"] == 422
    assert "product_list" in body(response)["detail"] and "n:" in body(response)["detail"]


def test_503_without_a_model(s3, monkeypatch, handlers, event, lambda_context):
    monkeypatch.setenv("STORAGE_URL", f"s3://{BUCKET}/empty")
    monkeypatch.setenv("JWT_SECRET", "j" * 48)
    get_settings.cache_clear()
    web.reset_resources()
    response = handlers[1](event("health"), lambda_context)
    assert response["statusCode"] == 503
    assert "no trained model" in body(response)["detail"]


def test_503_with_a_damaged_model(s3_deployment, s3, token, handlers, event, lambda_context):
    storage, version, catalog = s3_deployment
    storage.write(registry.artifact_key(version, "index.ann"), b"corrupt")
    ev = with_token(event("send_data"), token)
    ev["body"] = ev["body"].replace("REPLACE_WITH_CODE", catalog.codes[0])
    response = handlers[1](ev, lambda_context)
    assert response["statusCode"] == 503
    assert "damaged" in body(response)["detail"]


def test_recommend_function_does_not_import_pandas_or_scipy():
    import subprocess

    code = ("import sys; import functions.recommend.app; "
            "bad = [m for m in ('pandas', 'scipy') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert result.returncode == 0, result.stdout + result.stderr
