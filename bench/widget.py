"""Widget benchmark: how soon after navigation the shop widget's recommendations are in the page, on the demo shop
(`make demo`'s store, the API on the local server `make run-prod` starts, the shop on its own origin), in headless
Chromium (Debian's package) driven by Playwright over loopback.

The widget marks `recommender:rendered` (performance.mark) when its items are in the DOM: the mark's time is
measured from the navigation's start. A first visit loads everything (a new browser context: no HTTP cache, no
cached CORS preflight); a next page is a shopper moving on to another product in the same context.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.common import percentile, say
from bench.options import Options
from bench.report import PartResult, Row, target_row
from recommender.core.settings import settings_from_env
from recommender.core.storage import LocalStorage

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"]
PAINTED = "() => performance.getEntriesByName('recommender:rendered').length > 0"
MARK = "performance.getEntriesByName('recommender:rendered')[0].startTime"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(browser, base: str, codes: list[str], loads: int) -> tuple[list[float], list[float]]:
    """(first visits, next pages): ms from navigation start to the strip's items in the DOM."""
    first, following = [], []
    for i in range(loads):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        for step, code in enumerate((codes[i % len(codes)], codes[(i + 7) % len(codes)])):
            page.goto(f"{base}/p/{code}")
            page.wait_for_function(PAINTED, timeout=10_000)
            (first if step == 0 else following).append(float(page.evaluate(MARK)))
        context.close()
    return first, following


def bench_widget(options: Options) -> PartResult:
    """Part widget: first paint of the widget's recommendations on the demo shop's product pages."""
    from playwright.sync_api import sync_playwright

    from recommender.local import demo, server

    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: `apt-get install -y chromium` (or set CHROMIUM=...)")
    loads = options.widget_loads
    with tempfile.TemporaryDirectory(prefix="recommender-bench-widget-") as tmp:
        folder = Path(tmp)
        api_port, shop_port = _free_port(), _free_port()
        storage = LocalStorage(folder / "demo")
        say("widget: preparing the demo store and its shop")
        preset = "tiny" if options.quick else "default"  # a quick run checks the harness, not the figure
        site = demo.prepare(
            storage, folder / "synthetic.csv", "127.0.0.1", shop_port, preset=preset, progress=lambda _line: None
        )
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(api_port),
            "STORAGE_URL": str(storage.root),
            "RUN_DIR": str(folder / "run"),
            "CACHE_DIR": str(folder / "cache"),
            "LOG_LEVEL": "warning",
        }
        settings = settings_from_env(env)
        saved = dict(os.environ)
        os.environ.update(env)  # server.start passes its environment on to the server process
        try:
            server.start(settings, options.template)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        shop = demo.start_shop(site, "127.0.0.1", api_port, shop_port)
        try:
            codes = [p.code for p in site.products[:50]]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
                try:
                    _measure(browser, f"http://127.0.0.1:{shop_port}", codes, 2)  # warm the server and the browser
                    say(f"widget: {loads} first visits and next pages")
                    first, following = _measure(browser, f"http://127.0.0.1:{shop_port}", codes, loads)
                finally:
                    browser.close()
        finally:
            shop.shutdown()
            server.stop(settings)
    rows = [
        Row("widget", "first paint of recommendations, first visit, p50", percentile(first, 50), "ms"),
        target_row(
            "widget",
            "first paint of recommendations, first visit, p95",
            "widget_paint_ms",
            percentile(first, 95),
            "ms",
        ),
        Row("widget", "first paint of recommendations, next page, p95", percentile(following, 95), "ms"),
    ]
    md = [
        "## widget details",
        "",
        f"{loads} product pages of the demo shop opened in a new headless Chromium context each (first visit: the "
        "page, widget.js, the CORS preflight and /recommendations all fetched), then one more product page in the "
        "same context (next page: widget.js and the preflight cached). Measured: the widget's "
        "`recommender:rendered` mark, from the navigation's start, on loopback.",
    ]
    return PartResult(
        "widget",
        rows,
        {
            "loads": loads,
            "first_visit_ms": {"p50": percentile(first, 50), "p95": percentile(first, 95), "max": max(first)},
            "next_page_ms": {"p50": percentile(following, 50), "p95": percentile(following, 95)},
        },
        "",
        0,
        [],
        [],
        options.quick,
        "\n".join(md),
    )
