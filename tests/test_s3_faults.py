"""S3 faults, injected by a proxy between the product and moto's server over real HTTP: error answers (500, 503
SlowDown), connection resets, stalls past the read timeout and truncated bodies. Retries are bounded; serving keeps
the model it has and says what fails; a failed lookup never lets a token through; a failed upload or pointer write
leaves the storage as it was."""

import functools
import json
import os
import time
import uuid

import boto3
import pytest
from fastapi.testclient import TestClient

from bench.faultproxy import Fault, FaultProxy, internal_error, slow_down
from functions.auth.app import app as auth_app
from functions.recommend.app import app as recommend_app
from recommender import cli
from recommender.core import registry
from recommender.core.errors import StorageError
from recommender.core.settings import get_settings
from recommender.core.storage import open_storage, s3_call_limit
from recommender.serving.users import add_user
from recommender.training.pipeline import train
from tests.conftest import PASSWORD, free_port, make_runner
from tests.local.test_server import Http

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@functools.cache
def direct_client(endpoint: str):
    """A client of moto's server itself, past the proxy (made once: making one costs 0.1-0.3 s)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        **{k.lower(): v for k, v in CREDENTIALS.items() if k != "AWS_DEFAULT_REGION"},
        region_name="us-east-1",
    )


@pytest.fixture
def proxy(moto_server, monkeypatch):
    """A fault proxy in front of moto, a fresh bucket, and the settings of a product that talks to it: 3 attempts,
    short timeouts (so that stalls cost a second, not minutes)."""
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    direct_client(moto_server).create_bucket(Bucket=bucket)
    with FaultProxy(moto_server) as fault_proxy:
        for name, value in {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": fault_proxy.endpoint_url,
            "STORAGE_URL": f"s3://{bucket}/shop",
            "S3_MAX_ATTEMPTS": "3",
            "S3_CONNECT_TIMEOUT": "0.5",
            "S3_READ_TIMEOUT": "0.5",
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        get_settings.cache_clear()
        yield fault_proxy


@pytest.fixture
def s3_trained(proxy, tiny_csv):
    """An active model trained into the bucket (through the proxy, no faults yet); returns the storage."""
    storage = open_storage(get_settings())
    train(tiny_csv, storage, progress=lambda _m: None)
    return storage


def test_client_is_configured_from_the_settings(proxy):
    config = open_storage(get_settings()).client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert (config.connect_timeout, config.read_timeout) == (0.5, 0.5)
    # 3 attempts x (0.5 + 0.5) s, and backoffs of at most 1 s and 2 s between them.
    assert s3_call_limit(get_settings()) == 6.0


def test_transient_errors_are_retried_with_backoff(proxy):
    storage = open_storage(get_settings())
    storage.write("models/ACTIVE", b'{"version": "v1"}')
    proxy.inject(slow_down(method="GET", key="models/ACTIVE", times=1))
    proxy.inject(internal_error(method="GET", key="models/ACTIVE", times=1))
    proxy.inject(Fault("reset", method="PUT", key="users/", times=2))
    assert storage.read("models/ACTIVE") == b'{"version": "v1"}'
    assert [s.fault for s in proxy.requests("GET", "models/ACTIVE")] == ["error", "error", None]
    storage.write("users/alice.json", b"{}")
    assert [s.fault for s in proxy.requests("PUT", "users/")] == ["reset", "reset", None]


@pytest.mark.parametrize(
    "fault",
    [slow_down(), internal_error(), Fault("reset"), Fault("stall", seconds=30), Fault("truncate")],
    ids=["503-slowdown", "500", "reset", "stall", "truncated"],
)
def test_persistent_faults_fail_in_bounded_time_with_one_message(proxy, fault):
    storage = open_storage(get_settings())
    storage.write("models/ACTIVE", b'{"version": "v1", "previous": []}')
    proxy.inject(fault)
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"^S3 read of s3://.*/shop/models/ACTIVE failed: ") as raised:
        storage.read("models/ACTIVE")
    elapsed = time.monotonic() - started
    assert "\n" not in raised.value.message
    attempts = len(proxy.requests("GET"))
    # A truncated body arrives with a success status: botocore has nothing to retry, the length check refuses it.
    assert attempts == (1 if fault.kind == "truncate" else 3)
    # The stated limit, with room for a busy machine: never an unbounded wait.
    assert elapsed < s3_call_limit(get_settings()) + 10


def test_serving_keeps_its_model_and_a_failed_user_lookup_is_a_503(s3_trained, proxy, monkeypatch):
    monkeypatch.setenv("MODEL_POLL_SECONDS", "0")  # look at the pointer on every request (the Lambda path)
    monkeypatch.setenv("USER_CACHE_SECONDS", "0")  # and at the user record
    monkeypatch.setenv("JWT_SECRET", "s" * 40)
    get_settings.cache_clear()
    add_user(s3_trained, "alice", PASSWORD, rounds=4)
    version = registry.active_version(s3_trained)
    with TestClient(recommend_app) as rec, TestClient(auth_app) as auth:
        token = auth.post("/token", data={"username": "alice", "password": PASSWORD}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        basket = {"product_list": [], "n": 3}
        assert rec.get("/health").json()["status"] == "ok"

        proxy.inject(slow_down(key="models/"))
        health = rec.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "degraded" and health.json()["model_version"] == version
        assert "S3 read of" in health.json()["detail"] and "SlowDown" in health.json()["detail"]
        assert "faults-" not in health.json()["detail"] and "127.0.0.1" not in health.json()["detail"]
        answer = rec.post("/recommendations", json=basket, headers=headers)
        assert answer.status_code == 200 and answer.json()["model_version"] == version

        proxy.inject(Fault("reset", key="users/"))
        for response in (
            rec.post("/send_data", json=basket, headers=headers),
            auth.get("/users/me", headers=headers),
            auth.post("/token", data={"username": "alice", "password": PASSWORD}),
        ):
            assert response.status_code == 503, response.text
            # What failed, not where: no bucket, key or endpoint (the server log has them).
            assert response.json()["detail"] == "S3 read of the storage failed: ConnectionClosedError"

        proxy.clear()
        assert rec.post("/send_data", json=basket, headers=headers).status_code == 200
        assert rec.get("/health").json()["status"] == "ok"


@pytest.mark.slow
def test_background_server_survives_a_storage_outage(s3_trained, proxy, tmp_path):
    add_user(s3_trained, "alice", PASSWORD, rounds=4)
    version = registry.active_version(s3_trained)
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "RUN_DIR": str(tmp_path / "run"),
        "MODEL_POLL_SECONDS": "0.2",
        "USER_CACHE_SECONDS": "0",
        "BCRYPT_ROUNDS": "4",
    }
    make = make_runner(env)
    api = Http(port)
    try:
        make("run-prod")
        api.login("alice", PASSWORD)
        proxy.inject(Fault("reset"))  # the storage drops every connection (stalls are timed in the test above)
        deadline = time.monotonic() + 30
        while (health := api.call("GET", "/health")[1])["status"] != "degraded":
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        assert health["model_version"] == version and "Connection was closed" in health["detail"]
        status, body = api.call("POST", "/send_data", {"product_list": [], "n": 3})
        assert status == 503 and body["detail"] == "S3 read of the storage failed: ConnectionClosedError"
        proxy.clear()
        status, body = api.call("POST", "/send_data", {"product_list": [], "n": 3})
        assert status == 200 and len(body["result"]["recommendation"]) == 3
    finally:
        proxy.clear()
        make("kill", check=False)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_failed_upload_exits_with_one_line_and_leaves_nothing(s3_trained, proxy, tiny_csv, capsys):
    before = s3_trained.read(registry.ACTIVE)
    keys_before = s3_trained.list("models/")
    proxy.inject(internal_error(method="PUT", key="table_target.npy"))
    assert cli.main(["train", str(tiny_csv)]) == 1
    line = _one_error_line(capsys)
    assert "S3 write of" in line and "table_target.npy" in line and "InternalError" in line
    proxy.clear()
    assert s3_trained.read(registry.ACTIVE) == before
    assert s3_trained.list("models/") == keys_before  # no partial version left behind
    assert cli.main(["versions"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # the header and the one version


def test_failed_pointer_write_leaves_the_old_pointer(s3_trained, proxy, tiny_csv, capsys):
    before = s3_trained.read(registry.ACTIVE)
    staged = train(tiny_csv, s3_trained, activate=False, progress=lambda _m: None).version
    proxy.inject(Fault("reset", method="PUT", key="models/ACTIVE"))
    assert cli.main(["promote"]) == 1
    assert "models/ACTIVE" in _one_error_line(capsys)
    proxy.clear()
    assert s3_trained.read(registry.ACTIVE) == before
    assert registry.staged(s3_trained).version == staged  # still staged: the promotion can be retried
    assert cli.main(["promote"]) == 0
    assert registry.active_version(s3_trained) == staged


def test_a_pointer_write_whose_answer_was_lost_is_not_a_conflict(s3_trained, proxy, tiny_csv):
    before = registry.active(s3_trained)
    version = train(tiny_csv, s3_trained, activate=False, progress=lambda _m: None).version
    # The conditional put goes through, its answer is lost; botocore's retry then fails its If-Match (412).
    proxy.inject(Fault("reset", forward=True, method="PUT", key="models/ACTIVE", times=1))
    said: list[str] = []
    registry.activate(s3_trained, version, notify=said.append)
    assert [s.fault for s in proxy.requests("PUT", "models/ACTIVE")][-2:] == ["reset", None]
    assert registry.active(s3_trained) == registry.Pointer(version, (before.version, *before.previous))
    assert said == []
    # The same for a rollback, which would otherwise take its own write for another command's and give up.
    proxy.inject(Fault("reset", forward=True, method="PUT", key="models/ACTIVE", times=1))
    assert registry.rollback(s3_trained, notify=said.append) == before.version
    assert registry.active(s3_trained) == before and said == []


def test_events_get_a_2xx_only_once_stored(proxy, moto_server, monkeypatch):
    monkeypatch.setenv("JWT_SECRET", "s" * 40)
    get_settings.cache_clear()
    storage = open_storage(get_settings())
    add_user(storage, "alice", PASSWORD, rounds=4)
    acknowledged, refusals, stored_ids = set(), [], set()
    with TestClient(recommend_app) as rec, TestClient(auth_app) as auth:
        token = auth.post("/token", data={"username": "alice", "password": PASSWORD}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        # Every kind of failed put, at rates that make some batches fail all three attempts: 5xx answers, stalls
        # past the read timeout, and resets after the put went through (stored, but its answer lost).
        proxy.inject(internal_error(method="PUT", key="events/", rate=0.5))
        proxy.inject(slow_down(method="PUT", key="events/", rate=0.4))
        proxy.inject(Fault("stall", method="PUT", key="events/", rate=0.2, seconds=2))
        proxy.inject(Fault("reset", forward=True, method="PUT", key="events/", rate=0.3))
        now = int(time.time() * 1000)
        for batch in range(6):
            ids = [f"b{batch}-{i}" for i in range(5)]
            events = [
                {"event_id": i, "type": "view", "ts": now, "session_id": "s", "items": [{"stock_code": "A"}]}
                for i in ids
            ]
            for _attempt in range(8):  # the client retries a 503 (the widget does, with backoff)
                answer = rec.post("/events", json={"events": events}, headers=headers)
                if answer.status_code == 200:
                    assert all(r["status"] in ("accepted", "duplicate") for r in answer.json()["results"])
                    acknowledged.update(ids)
                    break
                assert answer.status_code == 503 and answer.headers["Retry-After"] == "2", answer.text
                assert answer.json()["detail"].startswith("S3 write of the storage failed")  # what, not where
                refusals.append(answer.json()["detail"])
        proxy.clear()
    direct = direct_client(moto_server)
    bucket = get_settings().storage_url.split("/")[2]
    for page in direct.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="shop/events/raw/"):
        for obj in page.get("Contents", []):
            rows = direct.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().splitlines()
            stored_ids.update(json.loads(row)["event_id"] for row in rows)
    assert refusals and acknowledged, "the faults should fail some batches and let others through"
    assert {seen.fault for seen in proxy.requests("PUT", "events/")} >= {"error", "stall", "reset", None}
    assert acknowledged <= stored_ids, f"acknowledged but not stored: {sorted(acknowledged - stored_ids)[:5]}"
