"""The shop widget's script as served: its size, headers, compression and caching (the browser tests, on the demo
shop, are tests/local/test_shop_browser.py)."""

import base64
import gzip
import shutil
import subprocess

import pytest

from recommender.serving import widget
from tests.conftest import ROOT
from tests.functions.test_functions import rec  # noqa: F401 (fixture)
from tests.functions.test_handlers import handlers  # noqa: F401 (fixture)

SCRIPT = ROOT / "shared" / "recommender" / "serving" / "static" / "widget.js"


def test_at_most_15_kb_gzipped():
    assert widget.gzipped_bytes() <= 15 * 1024
    assert gzip.decompress(widget.assets()[1].body) == SCRIPT.read_bytes()


def test_served_gzipped_with_cache_headers_and_etag(rec):
    response = rec.get("/widget.js", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["content-encoding"] == "gzip" and response.content == SCRIPT.read_bytes()
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["vary"] == "Accept-Encoding" and response.headers["x-content-type-options"] == "nosniff"
    again = rec.get("/widget.js", headers={"Accept-Encoding": "gzip", "If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_plain_for_clients_without_gzip(rec):
    response = rec.get("/widget.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in response.headers and response.content == SCRIPT.read_bytes()
    gzipped = rec.get("/widget.js", headers={"Accept-Encoding": "gzip"})
    assert response.headers["etag"] != gzipped.headers["etag"]  # two bodies, two tags
    stale = rec.get("/widget.js", headers={"Accept-Encoding": "identity", "If-None-Match": gzipped.headers["etag"]})
    assert stale.status_code == 200


def test_no_build_step_plain_script():
    """Plain ES5-level JavaScript, parsed as a classic script (what `<script async>` runs)."""
    text = SCRIPT.read_text()
    assert "import " not in text and "export " not in text and "=>" not in text
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    check = "new (require('vm').Script)(require('fs').readFileSync(process.argv[1], 'utf8'))"
    subprocess.run(["node", "-e", check, str(SCRIPT)], check=True)


def test_through_the_lambda_handler_gzipped_as_base64(handlers, event, lambda_context):  # noqa: F811
    """On AWS the script goes through Mangum: the gzipped body must come out base64-encoded, and say so."""
    ev = event("health")
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = "/widget.js"
    ev["routeKey"] = ev["requestContext"]["routeKey"] = "GET /widget.js"
    ev["headers"]["accept-encoding"] = "gzip, deflate, br"
    response = handlers[1](ev, lambda_context)
    assert response["statusCode"] == 200 and response["isBase64Encoded"] is True
    assert response["headers"]["content-encoding"] == "gzip"
    assert gzip.decompress(base64.b64decode(response["body"])) == SCRIPT.read_bytes()
