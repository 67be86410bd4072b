"""Shared fixtures: isolated settings, storage over local disk and S3 (moto), a tiny dataset, a trained model,
a user, and sample API Gateway events."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from recommender.core.settings import Settings, get_settings
from recommender.core.storage import LocalStorage, S3Storage
from recommender.serving import web
from recommender.serving.users import add_user
from recommender.tools import synthetic
from recommender.training.pipeline import train
from recommender.training.recipe import TrainingParams
from recommender.training.reranker import RerankParams

ROOT = Path(__file__).resolve().parent.parent
EVENTS = Path(__file__).resolve().parent / "events"
BUCKET = "recommender-test"
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Every test gets its own storage folder, run folder and fast bcrypt, whatever the caller's environment."""
    for f in fields(Settings):
        monkeypatch.delenv(f.name.upper(), raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("STORAGE_URL", str(tmp_path / "data"))
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BCRYPT_ROUNDS", "4")
    get_settings.cache_clear()
    web.reset_resources()
    yield
    get_settings.cache_clear()
    web.reset_resources()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, so nothing can reach a real AWS account."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_SECURITY_TOKEN", "testing"),
        ("AWS_SESSION_TOKEN", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)


# moto checks If-Match / If-None-Match and then writes, with nothing between the two keeping another request out;
# S3 does both as one step. Concurrency tests need S3's behaviour: moto's puts and deletes are made one at a time.
MOTO_ATOMIC_CONDITIONS = """
import threading
from moto.s3 import responses as _responses

_one_at_a_time = threading.RLock()


def _serialized(name):
    original = getattr(_responses.S3Response, name)

    def locked(self, *args, **kwargs):
        with _one_at_a_time:
            return original(self, *args, **kwargs)
    setattr(_responses.S3Response, name, locked)


for _name in ("put_object", "delete_object"):
    _serialized(_name)
"""


@pytest.fixture(scope="session")
def atomic_moto():
    """moto in this process, its conditional writes made atomic (as on S3)."""
    exec(compile(MOTO_ATOMIC_CONDITIONS, "conftest:MOTO_ATOMIC_CONDITIONS", "exec"), {})


@pytest.fixture(scope="session")
def s3_clients() -> dict[str, object]:
    """The S3 client the `s3` fixture hands out, made once: making one costs 0.1-0.3 s, and over a hundred tests
    ask for a fresh moto S3. moto's hook is installed in every botocore client made after moto is imported, so
    one client reaches whichever mock is running (a new, empty one per test)."""
    return {}


@pytest.fixture
def s3(aws_credentials, atomic_moto, s3_clients):
    """A moto S3 with one empty bucket (the session's client, made once a mock had started)."""
    with mock_aws():
        if "s3" not in s3_clients:
            with pytest.MonkeyPatch.context() as mp:  # made once: nothing of the first test's endpoint settings
                for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
                    mp.delenv(name)
                s3_clients["s3"] = boto3.client("s3", region_name="us-east-1")
        client = s3_clients["s3"]
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """moto's S3 server over real HTTP (conditional writes atomic, as on S3), for tests that need separate processes
    (or a proxy) to reach one S3; each test uses its own bucket. Returns the endpoint URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        server = f"{MOTO_ATOMIC_CONDITIONS}\nfrom moto.server import main\nmain(['-H', '127.0.0.1', '-p', '{port}'])"
        process = subprocess.Popen([sys.executable, "-c", server], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path):
    """The same contract runs against both backends."""
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    client = request.getfixturevalue("s3")
    return S3Storage(client, BUCKET, "some/prefix", cache_dir=str(tmp_path / "s3cache"))


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic dataset as a csv file."""
    path = tmp_path_factory.mktemp("datasets") / "tiny.csv"
    synthetic.write_csv(synthetic.TINY, path)
    return path


@pytest.fixture(scope="session")
def trained_folder(tmp_path_factory: pytest.TempPathFactory, tiny_csv: Path) -> Path:
    """A storage folder holding one active model trained on the tiny dataset (built once per session)."""
    folder = tmp_path_factory.mktemp("trained")
    train(tiny_csv, LocalStorage(folder), progress=lambda _m: None)
    return folder


# The tiny data shows no gain from a re-ranker: these settings give it trees anyway, to test everything around it.
TINY_RERANK = TrainingParams(
    rerank=RerankParams(days=60, min_baskets=20, min_queries=0, require_gain=False, min_data_in_leaf=5, max_rounds=40)
)


@pytest.fixture(scope="session")
def reranked_folder(tmp_path_factory: pytest.TempPathFactory, tiny_csv: Path) -> Path:
    """A storage folder holding one active model of the tiny dataset with a learned re-ranker (built once)."""
    folder = tmp_path_factory.mktemp("reranked")
    train(tiny_csv, LocalStorage(folder), TINY_RERANK, progress=lambda _m: None)
    return folder


@pytest.fixture
def trained_storage(trained_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStorage:
    """A private copy of the trained storage, made the configured STORAGE_URL."""
    folder = tmp_path / "data"
    shutil.copytree(trained_folder, folder, dirs_exist_ok=True)
    monkeypatch.setenv("STORAGE_URL", str(folder))
    get_settings.cache_clear()
    return LocalStorage(folder)


@pytest.fixture
def user(trained_storage: LocalStorage) -> SimpleNamespace:
    """An API user in the trained storage; .password is the clear password."""
    created = add_user(trained_storage, "alice", PASSWORD, "Alice Liddell", "alice@example.com", rounds=4)
    return SimpleNamespace(**vars(created), password=PASSWORD)


@pytest.fixture
def event():
    """Load a sample API Gateway HTTP API (payload v2.0) event from tests/events by name."""

    def load(name: str, **changes) -> dict:
        data = json.loads((EVENTS / f"{name}.json").read_text())
        data.update(changes)
        return data

    return load


@pytest.fixture
def lambda_context() -> SimpleNamespace:
    """The few attributes of a Lambda context object that Mangum reads."""
    return SimpleNamespace(function_name="test", aws_request_id="req-1", get_remaining_time_in_millis=lambda: 30000)


def start_server(env: dict[str, str]) -> Settings:
    """Start the local server in the background of this process with env set while it reads its settings and
    starts (the caller stops it with server.stop); the settings it runs with."""
    import os

    from recommender.core.settings import settings_from_env
    from recommender.local import server

    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        settings = settings_from_env(os.environ)
        server.start(settings, ROOT / "template.yaml")
    return settings


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_runner(env: dict[str, str]):
    """Run make targets in the repository as a user would; check=True asserts they succeed."""

    def make(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["make", "--no-print-directory", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=300,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    return make
