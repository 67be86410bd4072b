"""`make demo` as a newcomer runs it: in a store of its own, with the demo shop beside the API; the newcomer's own
training afterwards is measured against nothing of the demo's."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from recommender.core import registry
from recommender.core.storage import LocalStorage
from recommender.local import demo
from recommender.local.shop import Product, Shop, write_feed
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def test_store_and_origins():
    assert demo.store_url("./data") == "data/demo" and demo.store_url("s3://b/pfx/") == "s3://b/pfx/demo"
    assert demo.shop_origins("127.0.0.1", 8091) == ["http://127.0.0.1:8091", "http://localhost:8091"]
    assert demo.shop_origins("0.0.0.0", 9001) == ["http://127.0.0.1:9001", "http://localhost:9001"]
    assert demo.shop_origins("shop.lan", 80) == ["http://shop.lan:80"]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode()


def test_demo_keeps_its_own_store_and_serves_the_shop(tmp_path, tiny_csv):
    port = free_port()
    env = {**os.environ, "STORAGE_URL": str(tmp_path / "data"), "RUN_DIR": str(tmp_path / "data" / "run")}
    env |= {"PORT": str(port), "JWT_SECRET": "demo-test-secret-" + "x" * 40, "LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [sys.executable, "-m", "recommender", "demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = _get(f"http://127.0.0.1:{port + 1}/")
                health = _get(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the demo did not start"
                time.sleep(0.3)
        assert f'src="http://127.0.0.1:{port}/widget.js" data-key="rk_pub_' in page and '"status":"ok"' in health
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    assert f"its own store, {tmp_path / 'data' / 'demo'}" in out
    own, default = LocalStorage(tmp_path / "data" / "demo"), LocalStorage(tmp_path / "data")
    assert registry.active_version(own) is not None and registry.active(default) is None

    # The newcomer's own data then trains and is activated in the default store: no demo model to be compared with.
    trained = subprocess.run(
        [sys.executable, "-m", "recommender", "train", str(tiny_csv)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert trained.returncode == 0 and "activated" in trained.stdout, trained.stdout + trained.stderr
    assert "compared" not in trained.stdout and registry.active(default) is not None


def test_shop_pages_escape_the_catalogue_and_know_their_paths(tmp_path):
    hostile = Product("A<1>", '<img src=x onerror=alert(1)> "Mug"', 2.5, "Mugs & <Cups>")
    shop = Shop([hostile, Product("85123A", "Red Heart Holder", 2.55, "Holder")], "http://127.0.0.1:9", "rk_pub_x")
    status, kind, page = shop.answer("/p/A%3C1%3E")
    assert status == 200 and kind.startswith("text/html")
    assert b"<img src=x" not in page and b"&lt;img src=x onerror=alert(1)&gt; &quot;Mug&quot;" in page
    assert b'<script src="http://127.0.0.1:9/widget.js" data-key="rk_pub_x" async></script>' in page
    assert b'data-basket="A&lt;1&gt;"' in page and b"onerror=alert" not in shop.answer("/img/A%3C1%3E.svg")[2]
    assert [shop.answer(p)[0] for p in ("/p/nope", "/img/nope.svg", "/admin", "/cart", "/checkout")] == [
        404,
        404,
        404,
        200,
        200,
    ]
    assert "script-src 'self' http://127.0.0.1:9;" in shop.csp() and "unsafe" not in shop.csp()
    rows = write_feed(shop.products, tmp_path / "feed.csv").read_text().splitlines()
    assert rows[2] == "85123A,Red Heart Holder,2.55 GBP,Holder,in_stock,/img/85123A.svg,/p/85123A"
