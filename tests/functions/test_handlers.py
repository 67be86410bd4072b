"""The Lambda handlers, invoked with API Gateway HTTP API (payload v2.0) events through Mangum, on S3 (moto)."""

import asyncio
import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from recommender.core import registry
from recommender.core.items import Items
from recommender.core.settings import get_settings
from recommender.core.storage import S3Storage
from recommender.serving import resources, web
from recommender.serving.tokens import issue_token
from recommender.serving.users import add_user
from recommender.training.pipeline import train
from tests.conftest import BUCKET, PASSWORD, ROOT


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
    items = Items.from_json(storage.read(registry.artifact_key(version, "catalog.json")))
    return storage, version, items


@pytest.fixture
def handlers():
    from functions.auth.app import handler as auth_handler
    from functions.recommend.app import handler as recommend_handler

    # Mangum asks for the thread's event loop, as a fresh Lambda process has; an earlier test's asyncio.run() leaves
    # none set, which made these tests depend on the order they ran in.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield auth_handler, recommend_handler
    asyncio.set_event_loop(None)
    loop.close()


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
    _, version, items = s3_deployment
    ev = with_token(event("send_data"), token)
    code = items.codes[items.most_popular()[0]]
    ev["body"] = ev["body"].replace("REPLACE_WITH_CODE", code)
    response = handlers[1](ev, lambda_context)
    assert response["statusCode"] == 200
    rows = body(response)["result"]["recommendation"]
    assert len(rows) == 5 and code not in [r[0] for r in rows]


def test_recommendations_and_items(s3_deployment, token, handlers, event, lambda_context):
    _, version, items = s3_deployment
    ev = with_token(event("recommendations"), token)
    ev["body"] = ev["body"].replace("REPLACE_WITH_CODE", items.codes[0])
    answer = body(handlers[1](ev, lambda_context))
    assert answer["model_version"] == version and answer["unknown_codes"] == ["NOT-A-CODE"]
    items = handlers[1](with_token(event("items"), token), lambda_context)
    assert items["statusCode"] == 200 and len(body(items)["items"]) <= 5


def test_health(s3_deployment, handlers, event, lambda_context):
    _, version, items = s3_deployment
    answer = body(handlers[1](event("health"), lambda_context))
    assert answer["status"] == "ok" and answer["model_version"] == version and answer["item_count"] == len(items)


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
    storage, version, items = s3_deployment
    storage.write(registry.artifact_key(version, "index.ann"), b"corrupt")
    ev = with_token(event("send_data"), token)
    ev["body"] = ev["body"].replace("REPLACE_WITH_CODE", items.codes[0])
    response = handlers[1](ev, lambda_context)
    assert response["statusCode"] == 503
    assert "damaged" in body(response)["detail"]


# A fresh interpreter as the Lambda runtime starts one: the function's folder on sys.path, `import app`, then the
# model loaded as the first request loads it (pointer, copy to CACHE_DIR, checksums, memory-map), loaded once more
# from the local copy (so the copy's cost shows apart), and events answered through Mangum.
COLD_START = r"""
import json, sys, time
from types import SimpleNamespace
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import app
t1 = time.perf_counter()
from recommender.serving import web
from recommender.serving.model import load_model
from recommender.core.settings import get_settings
holder = web.model_holder(get_settings())
model = holder.refresh()
t2 = time.perf_counter()
load_model(holder.storage, model.version)
t3 = time.perf_counter()
context = SimpleNamespace(function_name="recommend", aws_request_id="cold", get_remaining_time_in_millis=lambda: 30000)
answers = []
for event in json.loads(sys.stdin.read()):
    t = time.perf_counter()
    response = app.handler(event, context)
    answers.append({"status": response["statusCode"], "body": json.loads(response["body"]),
                    "seconds": time.perf_counter() - t})
print("COLD_START " + json.dumps({
    "import_seconds": t1 - t0, "first_load_seconds": t2 - t1, "reload_seconds": t3 - t2, "answers": answers,
    "version": model.version, "forbidden": [m for m in ("pandas", "scipy") if m in sys.modules],
    "modules": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def run_cold_start(env: dict, events: list[dict]) -> dict:
    """Run COLD_START in a fresh interpreter with env; its measurements, answers and imported top-level modules."""
    result = subprocess.run(
        [sys.executable, "-c", COLD_START, str(ROOT / "functions" / "recommend")],
        input=json.dumps(events),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("COLD_START ")), None)
    assert result.returncode == 0 and line, result.stdout + result.stderr
    return json.loads(line[len("COLD_START ") :])


def cold_start_events(event, token: str, code: str) -> list[dict]:
    """GET /health, then POST /send_data for one code with a bearer token."""
    send = with_token(event("send_data"), token)
    send["body"] = send["body"].replace("REPLACE_WITH_CODE", code)
    return [event("health"), send]


def test_recommend_function_does_not_import_pandas_or_scipy(user, trained_storage, event, tmp_path):
    secret = "k" * 48
    items = Items.from_json(
        trained_storage.read(registry.artifact_key(registry.active_version(trained_storage), "catalog.json"))
    )
    code = items.codes[items.most_popular()[0]]
    env = {
        **os.environ,
        "STORAGE_URL": str(trained_storage.root),
        "JWT_SECRET": secret,
        "CACHE_DIR": str(tmp_path / "cache"),
    }
    run = run_cold_start(env, cold_start_events(event, issue_token("alice", secret, stamp=user.stamp), code))
    health, send = run["answers"]
    assert health["status"] == 200 and health["body"]["model_version"] == run["version"]
    assert send["status"] == 200 and len(send["body"]["result"]["recommendation"]) == 5
    assert "numpy" in run["modules"] and "annoy" in run["modules"]  # the check looks at a real sys.modules
    assert run["forbidden"] == [], f"the recommend function imported {run['forbidden']}"


class ReadOnlyStorage:
    """A storage that refuses every write, as the functions' IAM policies do on AWS."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.url = inner.url

    def __getattr__(self, name):
        if name in ("write", "create", "delete"):
            raise AssertionError(f"a function called storage.{name}: its IAM policy allows no writes")
        return getattr(self.inner, name)


def test_functions_work_read_only_with_the_secret_from_secrets_manager(
    s3_deployment, handlers, event, lambda_context, monkeypatch
):
    # What template.yaml deploys: JWT_SECRET_ARN set, JWT_SECRET not, no write permission on the bucket.
    import boto3

    arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="recommender-jwt", SecretString="s" * 64
    )["ARN"]
    monkeypatch.delenv("JWT_SECRET")
    monkeypatch.setenv("JWT_SECRET_ARN", arn)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    real_open = resources.open_storage
    monkeypatch.setattr(resources, "open_storage", lambda settings: ReadOnlyStorage(real_open(settings)))
    get_settings.cache_clear()
    web.reset_resources()
    _, version, items = s3_deployment
    response = handlers[0](event("token"), lambda_context)
    assert response["statusCode"] == 200, response
    token = body(response)["access_token"]
    assert handlers[0](with_token(event("users_me"), token), lambda_context)["statusCode"] == 200
    unknown = handlers[0](event("token", body="username=nobody&password=x"), lambda_context)
    assert unknown["statusCode"] == 401
    answers = [handlers[1](ev, lambda_context) for ev in cold_start_events(event, token, items.codes[0])]
    assert [a["statusCode"] for a in answers] == [200, 200]
    assert body(answers[0])["model_version"] == version


def test_events_are_stored_in_s3_before_the_answer(s3_deployment, token, handlers, event, lambda_context):
    storage, _, _ = s3_deployment
    now = datetime.now(UTC)
    ev = with_token(event("events"), token)
    ev["body"] = ev["body"].replace("REPLACE_WITH_ID", "ev-1").replace("REPLACE_WITH_TS", now.isoformat())
    response = handlers[1](ev, lambda_context)
    assert response["statusCode"] == 200, response
    assert body(response)["results"] == [{"event_id": "ev-1", "status": "accepted"}]
    (key,) = storage.list("events/raw/")  # one object for the batch, under the date and hour of receipt
    assert key.startswith(f"events/raw/date={now:%Y-%m-%d}/hour=") and key.endswith(".jsonl")
    (record,) = [json.loads(row) for row in storage.read(key).splitlines()]
    assert record["event_id"] == "ev-1" and record["source"] == "user:alice" and record["items"][0]["quantity"] == 2
    # The same batch again, as a client whose answer was lost would send it: a duplicate, nothing stored again.
    again = handlers[1](ev, lambda_context)
    assert body(again)["results"][0]["status"] == "duplicate" and len(storage.list("events/raw/")) == 1


def test_events_body_limit_and_a_failed_put_on_lambda(s3_deployment, s3, token, handlers, event, lambda_context):
    ev = with_token(event("events"), token)
    ev["body"] = json.dumps({"events": [], "padding": "x" * get_settings().events_max_body_bytes})
    response = handlers[1](ev, lambda_context)
    assert response["statusCode"] == 413 and "larger than the limit of 1048576 bytes" in body(response)["detail"]
    ev = with_token(event("events"), token)
    ev["body"] = ev["body"].replace("REPLACE_WITH_ID", "ev-2").replace("REPLACE_WITH_TS", datetime.now(UTC).isoformat())
    s3.put_bucket_policy(  # the put is denied, as without the template's s3:PutObject on events/raw/
        Bucket=BUCKET,
        Policy=json.dumps(
            {
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{BUCKET}/recommender/events/*",
                    }
                ]
            }
        ),
    )
    response = handlers[1](ev, lambda_context)
    assert response["statusCode"] == 503 and response["headers"]["retry-after"] == "2", response
    assert "S3 write of" in body(response)["detail"] and "Forbidden" in body(response)["detail"]
