"""The local server under slow clients, over loopback: a body that comes too slowly gets 408, one address cannot hold
more than its share of connections, and a flood of slow bodies from several addresses, more connections than the
process may open files, leaves /health and a logged-in client's /send_data answered within a second."""

import asyncio
import http.client
import json
import os
import resource
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recommender.core.storage import LocalStorage
from recommender.serving.users import add_user
from tests.conftest import PASSWORD, ROOT, free_port

pytestmark = pytest.mark.slow

# The server may open 256 files: without the connection limits, 300 slow connections and the model's files would
# use them up (EMFILE). With them it keeps at most 256 - 128 = 128 connections, 80 per address.
OPEN_FILES = 256
PER_ADDRESS = 80
BODY_TIMEOUT = 3.0
MIN_RATE = 100
SLOW_HEAD = (
    b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 60000\r\n\r\n"
)


def _cli(env: dict, *args: str, limit_files: bool = False) -> subprocess.CompletedProcess:
    def lower_file_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))

    return subprocess.run(
        [sys.executable, "-m", "recommender", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lower_file_limit if limit_files else None,
    )


@pytest.fixture(scope="module")
def server(trained_folder, tmp_path_factory):
    """One background server with small limits, on a process limited to OPEN_FILES files; yields (port, token,
    log path)."""
    folder = tmp_path_factory.mktemp("slow")
    shutil.copytree(trained_folder, folder / "data")
    add_user(LocalStorage(folder / "data"), "alice", PASSWORD, "Alice", "alice@example.com", rounds=4)
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "STORAGE_URL": str(folder / "data"),
        "RUN_DIR": str(folder / "run"),
        "JWT_SECRET": "slow-clients-test-signing-secret-0123456789",
        "BCRYPT_ROUNDS": "4",
        "MODEL_POLL_SECONDS": "0.5",  # the watcher opens files all along
        "BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "MIN_BODY_BYTES_PER_SECOND": str(MIN_RATE),
        "MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
    }
    env.pop("PASSWORD", None)
    started = _cli(env, "start", "--template", str(ROOT / "template.yaml"), limit_files=True)
    assert started.returncode == 0, started.stdout + started.stderr
    status, _h, body = request(
        port, "POST", "/token", f"username=alice&password={PASSWORD.replace(' ', '+')}".encode(), FORM
    )
    assert status == 200, body
    yield port, json.loads(body)["access_token"], folder / "run" / "server.log"
    _cli(env, "stop")


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        if own:
            conn.close()


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """What the server sends until it closes, and after how many seconds."""
    started = time.monotonic()
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks), time.monotonic() - started


def test_a_body_under_the_minimum_rate_gets_408(server):
    port, _token, _log = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(SLOW_HEAD + b"username=")
        answer, seconds = read_until_closed(sock, 30)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"bytes/s; the minimum is 100" in answer
    assert 1.5 < seconds < 4


def test_a_body_past_its_deadline_gets_408(server):
    port, _token, _log = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(SLOW_HEAD)
        started, answer = time.monotonic(), b""
        # 50 bytes every 0.2 s: 250 bytes/s, above the minimum rate, but 60,000 bytes would take 4 minutes.
        while time.monotonic() - started < 30:
            try:
                sock.sendall(b"x" * 50)
            except OSError:
                break
            sock.settimeout(0.2)
            try:
                answer = sock.recv(65536)
                break
            except TimeoutError:
                continue
        seconds = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 3 s" in answer
    assert BODY_TIMEOUT - 0.5 < seconds < BODY_TIMEOUT + 1.5


def test_one_address_holds_at_most_its_share_and_the_slowest_make_room(server):
    port, _token, _log = server
    socks = []
    try:
        for _ in range(PER_ADDRESS + 10):
            sock = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.5", 0))
            sock.sendall(b"GET /health HTTP/1.1\r\n")  # a head begun, never finished
            socks.append(sock)
        # Ten of the connections waiting longest (the server may have seen the first ones' bytes in another
        # order) were closed for the last ten, with a 503 saying why; the others are open, nothing to read.
        time.sleep(0.3)
        closed = select.select(socks, [], [], 0)[0]
        assert len(closed) == 10 and not set(closed) & set(socks[-10:])
        for sock in closed:
            answer, _seconds = read_until_closed(sock, 5)
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            assert b"too slow while the server was at its connection limit" in answer
        # Another address is not affected.
        assert request(port, "GET", "/health")[0] == 200
    finally:
        for sock in socks:
            sock.close()


async def _slow_client(port: int, address: str, stop: asyncio.Event, opened: list[int]) -> None:
    """One connection at a time POSTing /token with Content-Length 60000, a byte a second; a new one when the
    server closes it (an attacker keeps up the pressure)."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        except OSError:
            await asyncio.sleep(0.2)
            continue
        opened[0] += 1
        try:
            writer.write(SLOW_HEAD)
            while not stop.is_set():
                try:
                    if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                        break
                    break  # answered (408 or 503): the server is done with it
                except TimeoutError:
                    writer.write(b"a")
                    await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
        await asyncio.sleep(1.0)  # and comes back (bounded, to keep the test's own load small)


def _legit_client(
    port: int, kept: http.client.HTTPConnection, token: str, stop: threading.Event, timings: list
) -> None:
    """/health on a new connection, /send_data on the one kept open from before the flood, every 0.2 s."""
    basket = json.dumps({"product_list": ["P0001"], "n": 3}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    while not stop.is_set():
        for name, call in (
            ("/health", lambda: request(port, "GET", "/health")),
            ("/send_data", lambda: request(port, "POST", "/send_data", basket, headers, conn=kept)),
        ):
            started = time.monotonic()
            try:
                status = call()[0]
            except OSError:
                status = 0
            timings.append((name, time.monotonic() - started, status))
        stop.wait(0.2)


def test_a_flood_of_slow_bodies_leaves_health_and_send_data_answered_within_a_second(server):
    port, token, log = server
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    timings: list[tuple[str, float, int]] = []
    opened = [0]
    log_before = log.stat().st_size
    # A client logged in and connected before the flood keeps its connection (keep-alive) through it.
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    basket = json.dumps({"product_list": ["P0001"], "n": 3}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert request(port, "POST", "/send_data", basket, headers, conn=kept)[0] == 200

    async def flood() -> None:
        stop = asyncio.Event()
        done = threading.Event()
        # 300 slow connections from three addresses (100 each: more than an address's share, and all of them
        # together more than the server may keep or could open files for).
        clients = [asyncio.create_task(_slow_client(port, f"127.0.0.{2 + i % 3}", stop, opened)) for i in range(300)]
        await asyncio.sleep(1.5)  # the flood is at its height: every slot the server keeps is taken
        legit = asyncio.create_task(asyncio.to_thread(_legit_client, port, kept, token, done, timings))
        await asyncio.sleep(4.0)
        done.set()
        await legit
        stop.set()
        await asyncio.gather(*clients)

    try:
        asyncio.run(flood())
    finally:
        kept.close()
    for name in ("/health", "/send_data"):
        runs = [(seconds, status) for n, seconds, status in timings if n == name]
        assert len(runs) >= 5, runs
        assert all(status == 200 for _s, status in runs), runs
        assert max(seconds for seconds, _s in runs) < 1.0, runs
    text = Path(log).read_bytes()[log_before:].decode(errors="replace")
    assert "Too many open files" not in text
    assert "connection limits:" in text and "slow connections closed to make room" in text
    assert request(port, "GET", "/health")[0] == 200
    assert opened[0] > 300  # the server closed slow connections, and the attack opened new ones
