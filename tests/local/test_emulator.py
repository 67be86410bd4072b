"""The local S3 (moto's server over real HTTP): dummy credentials, `make emulate-s3` end to end with train, users,
run-prod and a promotion, and the recommend handler's cold start from S3 in a fresh process, measured."""

import json
import os
import socket
import time

import pytest

from recommender.core import registry
from recommender.core.items import Items
from recommender.core.settings import get_settings
from recommender.core.storage import open_storage
from recommender.local import emulator
from recommender.serving.tokens import issue_token
from recommender.serving.users import add_user
from recommender.tools import synthetic
from recommender.training.pipeline import train
from tests.conftest import PASSWORD, free_port, make_runner
from tests.functions.test_handlers import cold_start_events, run_cold_start
from tests.local.test_server import Http

AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
)


def clean_aws_env(tmp_path) -> dict:
    """The environment of a user with no AWS set-up at all: no credentials, no region, no ~/.aws, no instance role."""
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES}
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-creds"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


@pytest.mark.parametrize(
    "url, local",
    [
        ("http://127.0.0.1:5055", True),
        ("http://localhost:9000", True),
        ("http://[::1]:5055", True),
        ("https://s3.eu-west-1.amazonaws.com", False),
        ("http://10.0.0.5:9000", False),
        (None, False),
        ("", False),
    ],
)
def test_is_local_endpoint(url, local):
    assert emulator.is_local_endpoint(url) is local


def test_dummy_credentials_only_for_a_local_endpoint_without_credentials():
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:5055", "AWS_SESSION_TOKEN": "stale"}
    assert emulator.use_dummy_credentials(env) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"]
    assert env["AWS_ACCESS_KEY_ID"] == "testing" and "AWS_SESSION_TOKEN" not in env
    mine = {"AWS_ENDPOINT_URL": "http://127.0.0.1:5055", "AWS_ACCESS_KEY_ID": "AKIAREAL", "AWS_REGION": "eu-west-1"}
    assert emulator.use_dummy_credentials(mine) == [] and mine["AWS_ACCESS_KEY_ID"] == "AKIAREAL"
    profile = {"AWS_ENDPOINT_URL": "http://localhost:5055", "AWS_PROFILE": "dev", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert emulator.use_dummy_credentials(profile) == []
    remote = {"AWS_ENDPOINT_URL": "https://minio.example.com"}
    assert emulator.use_dummy_credentials(remote) == [] and remote == {"AWS_ENDPOINT_URL": "https://minio.example.com"}
    assert emulator.use_dummy_credentials({}) == []


def test_emulator_port_and_storage_url(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:6123")
    get_settings.cache_clear()
    assert emulator.emulator_port(get_settings()) == 6123 and emulator.emulator_port(get_settings(), 7000) == 7000
    assert emulator.emulated_storage_url(get_settings()) == "s3://recommender-local/recommender"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.amazonaws.com")
    monkeypatch.setenv("STORAGE_URL", "s3://mine/models")
    get_settings.cache_clear()
    assert emulator.emulator_port(get_settings()) == emulator.DEFAULT_PORT
    assert emulator.emulated_storage_url(get_settings()) == "s3://mine/models"


def test_stop_without_emulator_and_refusal_of_a_busy_port(tmp_path):
    assert emulator.stop(get_settings()) is None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(emulator.ConfigError, match="already in use"):
            emulator.start(get_settings(), port=busy.getsockname()[1])
    assert not emulator.pid_file(get_settings()).exists()


@pytest.mark.slow
def test_emulate_s3_train_serve_promote_over_http(tmp_path, tiny_csv):
    second = tmp_path / "second.csv"
    synthetic.write_csv(synthetic.preset("tiny", seed=7, products=80, start="2011-12-15"), second)
    s3_port, api_port = free_port(), free_port()
    endpoint, storage_url = f"http://127.0.0.1:{s3_port}", "s3://shop-models/prod"
    env = {
        **clean_aws_env(tmp_path),
        "STORAGE_URL": storage_url,
        "AWS_ENDPOINT_URL": endpoint,
        "RUN_DIR": str(tmp_path / "run"),
        "CACHE_DIR": str(tmp_path / "cache"),
        "PORT": str(api_port),
        "HOST": "127.0.0.1",
        "MODEL_POLL_SECONDS": "1",
        "BCRYPT_ROUNDS": "4",
    }

    make = make_runner(env)

    try:
        started = make("emulate-s3")
        assert f"AWS_ENDPOINT_URL={endpoint}" in started.stdout and f"STORAGE_URL={storage_url}" in started.stdout
        pid = json.loads((tmp_path / "run" / "s3-emulator.pid").read_text())["pid"]
        assert "already running" in make("emulate-s3").stdout

        trained = make("train", f"PATH_TO_DATA={tiny_csv}")
        assert "s3://shop-models/prod/" in trained.stdout
        make("add_user", "USER_NAME=alice", f"PASSWORD={PASSWORD}", "FULL_NAME=Alice", "EMAIL=alice@example.com")
        assert "alice" in make("list_users").stdout
        make("run-prod")

        api = Http(api_port)
        first = api.call("GET", "/health")[1]["model_version"]
        api.login("alice", PASSWORD)
        status, answer = api.call("POST", "/send_data", {"product_list": ["85123A"], "n": 5})
        assert status == 200 and len(answer["result"]["recommendation"]) == 5

        make("train_parallel", f"PATH_TO_DATA={second}")
        assert api.call("GET", "/health")[1]["model_version"] == first
        make("load_after_parallel_train")
        promoted_at = time.monotonic()
        while (version := api.call("GET", "/health")[1]["model_version"]) == first:
            assert time.monotonic() - promoted_at < 5, "the promoted model was not served within 5 s"
            time.sleep(0.1)
        assert version in make("versions").stdout
        status, answer = api.call("POST", "/recommendations", {"product_list": [], "n": 3})
        assert status == 200 and answer["model_version"] == version
    finally:
        make("kill", check=False)
        stopped = make("emulate-s3-stop", check=False)
    assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", s3_port), timeout=1)
    assert "no S3 emulator is running" in make("emulate-s3-stop").stdout


@pytest.fixture
def s3_emulator(monkeypatch, tmp_path):
    """moto's server started by the emulator command's own code on a free port, with credentials as a user has none."""
    port = free_port()
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("STORAGE_URL", "s3://cold-start/recommender")
    emulator.use_dummy_credentials(os.environ)  # what the CLI does; monkeypatch restores the environment after
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, os.environ[name])
    get_settings.cache_clear()
    started = emulator.start(get_settings(), port=port)
    yield started
    emulator.stop(get_settings())


@pytest.mark.slow
def test_cold_start_from_s3_measured(s3_emulator, tiny_csv, event, tmp_path, capsys):
    settings = get_settings()
    storage = open_storage(settings)
    version = train(tiny_csv, storage, progress=lambda _m: None).version
    alice = add_user(storage, "alice", PASSWORD, rounds=4)
    items = Items.from_json(storage.read(registry.artifact_key(version, "catalog.json")))
    secret = "c" * 48
    cache = tmp_path / "lambda-tmp"
    env = {**os.environ, "JWT_SECRET": secret, "CACHE_DIR": str(cache)}
    events = cold_start_events(
        event, issue_token("alice", secret, stamp=alice.stamp), items.codes[items.most_popular()[0]]
    )
    started = time.perf_counter()
    run = run_cold_start(env, events + [events[1]])
    total = time.perf_counter() - started
    health, first, warm = run["answers"]
    assert [health["status"], first["status"], warm["status"]] == [200, 200, 200]
    assert run["version"] == version and run["forbidden"] == []
    copied = {p.name for p in cache.rglob("*") if p.is_file()}
    assert {"index.ann", "table_target.npy", "catalog.json"} <= copied  # downloaded from S3 to the local cache
    with capsys.disabled():
        print(
            f"\ncold start of the recommend handler from S3 (moto over HTTP, tiny model, {len(items)} items): "
            f"{total * 1000:.0f} ms from spawn to the third answer\n"
            f"  import app: {run['import_seconds'] * 1000:.0f} ms"
            f" | model download + verify + load: {run['first_load_seconds'] * 1000:.0f} ms"
            f" (of which verify + load from /tmp: {run['reload_seconds'] * 1000:.0f} ms)"
            f" | first /health: {health['seconds'] * 1000:.1f} ms"
            f" | first /send_data: {first['seconds'] * 1000:.1f} ms | warm /send_data: {warm['seconds'] * 1000:.1f} ms"
        )
