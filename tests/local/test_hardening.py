"""The local server as a client sees it over loopback: header size and time limits, HEAD, and no secret in any
log line of a full run (make run-prod, logins good and bad, make passwd, queries, make kill)."""

import http.client
import json
import os
import shutil
import socket
import time

import pytest

from recommender.core.storage import LocalStorage
from recommender.serving.users import add_user
from tests.conftest import PASSWORD, free_port, make_runner

pytestmark = pytest.mark.slow

SECRET = "hardening-test-signing-secret-0123456789abcdef"
HEAD_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(trained_folder, tmp_path_factory):
    """One `make run-prod` for the module, with small head limits; yields (port, make, folder)."""
    folder = tmp_path_factory.mktemp("hardening")
    shutil.copytree(trained_folder, folder / "data")
    add_user(LocalStorage(folder / "data"), "alice", PASSWORD, "Alice", "alice@example.com", rounds=4)
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "STORAGE_URL": str(folder / "data"),
        "RUN_DIR": str(folder / "run"),
        "JWT_SECRET": SECRET,
        "BCRYPT_ROUNDS": "4",
        "USER_CACHE_SECONDS": "0",
        "MAX_HEADER_BYTES": "8192",
        "HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
    }
    env.pop("PASSWORD", None)
    make = make_runner(env)
    make("run-prod")
    yield port, make, folder
    make("kill", check=False)


def request(port: int, method: str, path: str, body: str | bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


def read_answer(sock: socket.socket, deadline: float = 30.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(deadline)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_headers_get_431_and_the_server_keeps_serving(server):
    port, _make, _folder = server
    status, headers, body = request(port, "GET", "/health", headers={"X-Big": "x" * 9000})
    assert status == 431 and json.loads(body)["detail"].startswith("the request line and headers are larger")
    assert headers["x-content-type-options"] == "nosniff"
    assert request(port, "GET", "/health", headers={"X-Fits": "x" * 6000})[0] == 200


def test_an_endless_header_is_cut_off_early(server):
    port, _make, _folder = server
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            while sent < 80_000_000:
                sock.sendall(b"y" * 65536)
                sent += 65536
        except OSError:
            pass  # the server closed the connection: what we want
        answer = read_answer(sock) if sent < 80_000_000 else b""
    assert sent < 4_000_000, f"the server read {sent:,} bytes of one header"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")


def test_slow_headers_get_408(server):
    port, _make, _folder = server
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = b""
        try:
            # One header line every half timeout, forever: the server must end it (we give up after 30 s).
            while time.monotonic() - started < 30:
                sock.sendall(b"X-Slow: 1\r\n")
                sock.settimeout(HEAD_TIMEOUT / 2)
                try:
                    answer = read_answer(sock, HEAD_TIMEOUT / 2)
                    break
                except TimeoutError:
                    continue
        except OSError:
            answer = answer or b"closed"
    assert answer.startswith(b"HTTP/1.1 408") or answer == b"closed", answer[:100]


def test_silent_connections_are_closed(server):
    port, _make, _folder = server
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        assert read_answer(sock) == b""


def test_head_health_and_items(server):
    port, _make, _folder = server
    status, _h, body = request(
        port,
        "POST",
        "/token",
        f"username=alice&password={PASSWORD.replace(' ', '+')}",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    token = json.loads(body)["access_token"]
    for path in ("/health", "/items?q=a"):
        status, headers, body = request(port, "HEAD", path, headers={"Authorization": f"Bearer {token}"})
        assert (status, body) == (200, b""), path
        assert int(headers["content-length"]) > 0 and headers["x-content-type-options"] == "nosniff"
    assert request(port, "HEAD", "/send_data")[0] == 405


def test_a_client_leaving_mid_body_is_no_server_error(server):
    port, _make, folder = server
    status, _h, body = request(
        port,
        "POST",
        "/token",
        f"username=alice&password={PASSWORD.replace(' ', '+')}",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    token = json.loads(body)["access_token"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST /send_data HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"product_list"'.encode()
        )
    log = folder / "run" / "server.log"
    deadline = time.monotonic() + 30
    while "closed the connection before its request was read" not in log.read_text():
        assert "Traceback" not in log.read_text() and time.monotonic() < deadline
        time.sleep(0.1)
    assert "Traceback" not in log.read_text()
    assert request(port, "GET", "/health")[0] == 200


def test_no_secret_in_any_log_line(server):
    port, make, folder = server
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    outputs = []
    new_password = "Another secret pass 42"
    outputs.append(make("passwd", "USER_NAME=alice", f"PASSWORD={new_password}"))
    status, _h, body = request(
        port, "POST", "/token", f"username=alice&password={new_password.replace(' ', '+')}", form
    )
    assert status == 200
    token = json.loads(body)["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    for path, payload in (("/send_data", '{"product_list": ["x"], "n": 3}'), ("/recommendations", "not json")):
        request(port, "POST", path, payload, auth)
    request(port, "GET", "/users/me", headers=auth)
    request(port, "GET", "/users/me", headers={"Authorization": f"Bearer {token[:-2]}xx"})
    for password in ("wrong password", "x" * 5000, new_password + "\n"):
        request(port, "POST", "/token", "username=alice&password=" + password.replace(" ", "+"), form)
    for _ in range(6):
        request(port, "POST", "/token", "username=bob&password=bob-guess", form)
    outputs.append(make("list_users"))
    outputs.append(make("status"))

    record = json.loads((folder / "data" / "users" / "alice.json").read_text())
    log = (folder / "run" / "server.log").read_text()
    assert '"outcome": "success"' in log and '"outcome": "throttled"' in log and '"outcome": "failure"' in log
    everything = log + "".join(o.stdout + o.stderr for o in outputs)
    for secret in (
        new_password,
        PASSWORD,
        record["password_hash"],
        record["password_hash"].split("$")[-1],
        token,
        token.split(".")[-1],
        SECRET,
        record["stamp"],
        "bob-guess",
        "x" * 100,
    ):
        assert secret not in everything, f"{secret[:12]}... appears in a log line"
