"""End to end over real HTTP: make run-prod, queries, hot model swap under load with zero failures, make kill."""

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from recommender.tools import synthetic
from tests.conftest import PASSWORD, free_port, make_runner

pytestmark = pytest.mark.slow


class Http:
    """A tiny client for the API under test."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = None

    def call(self, method: str, path: str, body: dict | None = None, form: dict | None = None):
        data, headers = None, {}
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def login(self, username: str, password: str) -> None:
        status, body = self.call("POST", "/token", form={"username": username, "password": password})
        assert status == 200, body
        self.token = body["access_token"]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan waits for its reaper, which a container's init may never be)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def make_env(trained_storage, user, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "STORAGE_URL": str(trained_storage.root),
        "RUN_DIR": str(tmp_path / "run"),
        "MODEL_POLL_SECONDS": "1",
    }

    make = make_runner(env)

    yield make, port, tmp_path
    make("kill", check=False)


@pytest.fixture(scope="session")
def second_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("second") / "second.csv"
    synthetic.write_csv(synthetic.preset("tiny", seed=7, products=80, start="2011-12-15"), path)
    return path


def test_run_prod_query_hot_swap_kill(make_env, second_dataset):
    make, port, tmp_path = make_env
    started = make("run-prod")
    assert f"http://127.0.0.1:{port}" in started.stdout
    again = make("run-prod", check=False)
    assert again.returncode != 0 and "already running" in again.stderr

    api = Http(port)
    _, health = api.call("GET", "/health")
    first = health["model_version"]
    assert first in make("status").stdout
    api.login("alice", PASSWORD)
    status, body = api.call("POST", "/send_data", {"product_list": ["85123A"], "n": 10})
    assert status == 200 and len(body["result"]["recommendation"]) == 10

    failures, versions, stop = [], set(), threading.Event()

    def keep_asking():
        client = Http(port)
        client.token = api.token
        while not stop.is_set():
            try:
                code, answer = client.call("POST", "/recommendations", {"product_list": [], "n": 5})
                if code != 200 or len(answer["items"]) != 5:
                    failures.append((code, answer))
                else:
                    versions.add(answer["model_version"])
            except Exception as err:  # a dropped connection is a failure too
                failures.append(repr(err))

    worker = threading.Thread(target=keep_asking)
    worker.start()
    try:
        make("train_parallel", f"PATH_TO_DATA={second_dataset}")
        assert api.call("GET", "/health")[1]["model_version"] == first  # staged, not served
        make("load_after_parallel_train")
        swapped_at = time.monotonic()
        while api.call("GET", "/health")[1]["model_version"] == first:
            assert time.monotonic() - swapped_at < 5, "the new model was not served within 5 seconds"
            time.sleep(0.1)
        second = api.call("GET", "/health")[1]["model_version"]
        time.sleep(1.5)
    finally:
        stop.set()
        worker.join()
    assert not failures, failures[:3]
    assert versions == {first, second}

    # `make train` activating a new version is picked up the same way.
    make("train", f"PATH_TO_DATA={second_dataset}")
    deadline = time.monotonic() + 5
    while api.call("GET", "/health")[1]["model_version"] == second:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    stopped = make("kill")
    assert "stopped" in stopped.stdout
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    assert not (tmp_path / "run" / "server.pid").exists()
    assert "no background server" in make("kill").stdout


def test_original_sequence(make_env, second_dataset):
    make, port, _ = make_env
    make("run-prod")
    first = Http(port).call("GET", "/health")[1]["model_version"]
    make("train_parallel", f"PATH_TO_DATA={second_dataset}")
    make("kill")
    make("load_after_parallel_train")
    make("run-prod")
    api = Http(port)
    assert api.call("GET", "/health")[1]["model_version"] != first
    api.login("alice", PASSWORD)
    assert api.call("GET", "/users/me")[1]["username"] == "alice"
    make("kill")


def test_kill_stops_only_its_own_process(make_env):
    make, port, tmp_path = make_env
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        make("run-prod")
        pid = json.loads((tmp_path / "run" / "server.pid").read_text())["pid"]
        make("kill")
        assert bystander.poll() is None
        assert not _running(pid)
    finally:
        bystander.kill()
        bystander.wait()
