"""/docs (Swagger UI) and /redoc (ReDoc) on the local server: every file they load comes from the server itself,
with the right content type and a Content-Security-Policy, and they draw the API in a browser with no network."""

import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recommender.local import api_docs
from recommender.local.gateway import Gateway, read_routes
from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def client():
    return TestClient(Gateway(read_routes(TEMPLATE), ROOT))


def assets_of(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_load_only_files_of_this_server_with_their_content_types(client, page):
    answer = client.get(page)
    assert answer.status_code == 200 and answer.headers["content-type"] == "text/html; charset=utf-8"
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in answer.text  # nothing inline: the policy would block it
    urls = assets_of(answer.text)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    for url in urls:
        served = client.get(url)
        assert served.status_code == 200, url
        assert served.headers["content-type"].startswith(kinds[Path(url).suffix]), url
        assert served.headers["x-content-type-options"] == "nosniff"
        assert client.get(url, headers={"If-None-Match": served.headers["etag"]}).status_code == 304
    assert client.get("/openapi.json").status_code == 200


def test_swagger_ui_and_redoc_are_the_packaged_ones(client):
    assert len(client.get("/docs/swagger-ui-bundle.js").content) > 500_000
    assert b"SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js").content
    assert b"Redoc" in client.get("/redoc/redoc.standalone.js").content[:200_000]
    assert client.get("/docs/swagger-init.js").content.startswith(b"window.ui = SwaggerUIBundle(")
    assert client.head("/docs").status_code == 200
    assert client.get("/docs/other.js").status_code == 404


def test_without_the_package_the_pages_say_what_to_install(monkeypatch):
    monkeypatch.setattr(api_docs.importlib.util, "find_spec", lambda _name: None)
    api_docs.asset.cache_clear()
    try:
        answer = api_docs.response("/docs/swagger-ui.css")
    finally:
        api_docs.asset.cache_clear()
    assert answer.status_code == 503 and b"pip install fastapi-offline" in answer.body


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_swagger_ui_and_redoc_draw_the_api_offline(trained_storage, tmp_path):
    """Headless Chromium with every host but the local server unreachable draws both pages, with no error and no
    request that the policy blocked, and Swagger UI's "Try it out" calls the API."""
    import threading

    import uvicorn
    from playwright.sync_api import sync_playwright

    from tests.conftest import free_port

    port = free_port()
    config = uvicorn.Config(Gateway(read_routes(TEMPLATE), ROOT), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
        with sync_playwright() as p:
            # --proxy-server to a closed port: any request to another host fails, as without internet.
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--proxy-server=127.0.0.1:9"],
            )
            try:
                page = browser.new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
                page.goto(f"http://127.0.0.1:{port}/docs")
                page.wait_for_selector("text=/send_data", timeout=15_000)
                assert page.locator(".btn.authorize").count() == 1
                # "Try it out" on GET /health: the page may call the API (connect-src 'self').
                page.click("[data-path='/health']")
                page.click("button.try-out__btn")
                page.click("button.execute")
                status = page.wait_for_selector(".live-responses-table tbody .response-col_status", timeout=15_000)
                assert status.inner_text().strip() == "200"
                page.goto(f"http://127.0.0.1:{port}/redoc")
                page.wait_for_selector("text=Recommender API", timeout=15_000)
                page.wait_for_selector("text=/send_data", timeout=15_000)
                # ReDoc always shows its maker's logo from cdn.redoc.ly: the policy blocks it (nothing is sent) and
                # ReDoc then leaves it out.
                problems = [p for p in problems if "cdn.redoc.ly/redoc/logo-mini.svg" not in p]
                assert problems == [], problems
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_function_apps_have_no_pages_of_their_own_loading_from_a_cdn():
    from functions.auth.app import app as auth
    from functions.recommend.app import app as recommend

    for app in (auth, recommend):
        for path in ("/docs", "/redoc"):
            assert TestClient(app).get(path).status_code in (404, 405)
