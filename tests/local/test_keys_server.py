"""API keys end to end over real HTTP: make add_key, make run-prod (uvicorn behind the template's routes), a
browser's preflight and request, make keys, make revoke_key seen within MODEL_POLL_SECONDS, make kill."""

import json
import os
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import free_port, make_runner

pytestmark = pytest.mark.slow
SHOP = "http://shop.localhost:8000"


def _call(port: int, method: str, path: str, headers: dict, body: bytes | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


def test_keys_through_make_and_uvicorn(trained_storage, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "STORAGE_URL": str(trained_storage.root),
        "RUN_DIR": str(tmp_path / "run"),
        "MODEL_POLL_SECONDS": "0.5",
    }
    make = make_runner(env)
    added = make("add_key", "NAME=shop-web", "SCOPES=recommend,events", f"ORIGINS={SHOP}", "RATE=20")
    key = next(line for line in added.stdout.splitlines() if line.startswith("rk_pub_"))
    assert "shown once and never again" in added.stdout
    refused = make("add_key", "NAME=bad", f"ORIGINS={SHOP}/path", check=False)
    assert refused.returncode != 0 and "is not an origin" in refused.stderr
    make("run-prod")
    try:
        status, headers, _ = _call(
            port, "OPTIONS", "/send_data", {"Origin": SHOP, "Access-Control-Request-Method": "POST"}
        )
        assert status == 204 and headers["access-control-allow-origin"] == SHOP
        body = json.dumps({"product_list": [], "n": 3}).encode()
        keyed = {"X-API-Key": key, "Origin": SHOP, "Content-Type": "application/json"}
        status, headers, answer = _call(port, "POST", "/send_data", keyed, body)
        assert status == 200 and headers["x-recommendation-id"].startswith("r1.")
        assert len(json.loads(answer)["result"]["recommendation"]) == 3
        listed = make("keys").stdout
        assert "shop-web" in listed and SHOP in listed and "events,recommend" in listed and key not in listed
        deadline = time.monotonic() + 5
        while make("keys").stdout.rstrip().endswith("never"):  # written off the request path
            assert time.monotonic() < deadline
            time.sleep(0.1)
        revoked = make("revoke_key", "NAME=shop-web")
        assert "revoked API key shop-web" in revoked.stdout
        time.sleep(0.6)
        status, _, answer = _call(port, "POST", "/send_data", keyed, body)
        assert status == 401 and "unknown or revoked API key" in json.loads(answer)["detail"]
        status, headers, _ = _call(
            port, "OPTIONS", "/send_data", {"Origin": SHOP, "Access-Control-Request-Method": "POST"}
        )
        assert status == 403 and "access-control-allow-origin" not in headers
    finally:
        make("kill", check=False)
    assert "no API keys yet" in make("keys").stdout
