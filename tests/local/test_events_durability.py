"""Acknowledged means stored: the real local server is killed with SIGKILL while clients post batches of events,
and after a restart every event that got a 2xx is in the raw log."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from recommender.core.event_log import RAW_PREFIX
from tests.conftest import PASSWORD, ROOT, free_port
from tests.local.test_server import Http

pytestmark = pytest.mark.slow
CLIENTS = 4
BATCH = 25


def start(env: dict[str, str], port: int, log) -> subprocess.Popen:
    """`python -m recommender serve` in the background; returned once /health answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "recommender", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/health")
            connection.getresponse().read()
            return process
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


def _event(event_id: str, now_ms: int) -> dict:
    return {"event_id": event_id, "type": "view", "ts": now_ms, "session_id": "s", "items": [{"stock_code": "A"}]}


def logged(storage_root) -> tuple[list[str], list[str]]:
    """The event ids in the raw log, and its files; a torn last line (a write the kill interrupted) is skipped."""
    ids, files = [], sorted((storage_root / RAW_PREFIX).rglob("*.jsonl"))
    for path in files:
        lines = path.read_bytes().split(b"\n")
        for number, row in enumerate(lines):
            try:
                ids.append(json.loads(row)["event_id"])
            except ValueError:
                assert number == len(lines) - 1, f"{path}: line {number + 1} is torn but not the last"
    return ids, [p.name for p in files]


def test_every_acknowledged_event_survives_kill_9(trained_storage, user, tmp_path):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "STORAGE_URL": str(trained_storage.root)}
    env["RUN_DIR"] = str(tmp_path / "run")
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - kept open across the two servers
    server = start(env, port, log)
    try:
        api = Http(port)
        api.login("alice", PASSWORD)
        acknowledged: list[str] = []
        stop = threading.Event()
        lock = threading.Lock()

        def post_batches(client: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"}
            n = 0
            while not stop.is_set():
                ids = [f"c{client}-{n}-{i}" for i in range(BATCH)]
                n += 1
                now = int(time.time() * 1000)
                events = [_event(i, now) for i in ids]
                try:
                    connection.request("POST", "/events", json.dumps({"events": events}), headers)
                    response = connection.getresponse()
                    answer = json.loads(response.read())
                except (OSError, http.client.HTTPException, ValueError):
                    return  # the server is gone: whatever was in flight was never acknowledged
                if response.status == 200:
                    assert answer["accepted"] == BATCH, answer
                    with lock:
                        acknowledged.extend(ids)

        clients = [threading.Thread(target=post_batches, args=(c,)) for c in range(CLIENTS)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 5
        while len(acknowledged) < 40 * BATCH and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(server.pid, signal.SIGKILL)  # mid-load: batches are being written as it dies
        server.wait(timeout=10)
        stop.set()
        for client in clients:
            client.join(timeout=15)
        assert len(acknowledged) >= 4 * BATCH, "too few batches got through to test anything"
        print(f"{len(acknowledged)} events acknowledged before the kill")

        server = start(env, port, log)
        stored, files = logged(trained_storage.root)
        missing = set(acknowledged) - set(stored)
        assert not missing, f"{len(missing)} acknowledged events are not in the log, e.g. {sorted(missing)[:3]}"
        # The restarted server writes a segment of its own, never after the killed one's possibly torn tail.
        status, answer = api.call("POST", "/events", {"events": [_event("after", int(time.time() * 1000))]})
        assert status == 200 and answer["accepted"] == 1, answer
        again, files_after = logged(trained_storage.root)
        assert "after" in again and len(files_after) == len(files) + 1
    finally:
        server.kill()
        server.wait(timeout=10)
        log.close()
