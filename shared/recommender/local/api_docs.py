"""The API's interactive documentation on the local server: Swagger UI at /docs and ReDoc at /redoc.

Their scripts and styles are served from this server (the copies the fastapi-offline package ships), never from a
CDN: the pages work offline, and no third-party host can change the code they run. Each page has its own
Content-Security-Policy allowing nothing from elsewhere and no inline script; the starter script is a file here too.
Only the local server serves them (the deployed API has no such routes), so the files never enter the Lambda layer,
and they are read from disk on their first request only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from starlette.responses import Response

from recommender.core.errors import ConfigError
from recommender.serving import console
from recommender.serving.console import Asset

TITLE = "Recommender API"
JS, CSS, HTML = "text/javascript; charset=utf-8", "text/css; charset=utf-8", "text/html; charset=utf-8"

# Swagger UI with the options FastAPI's own page uses; no validator badge (it would send the API description to
# validator.swagger.io).
SWAGGER_INIT = b"""window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""
SWAGGER_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE}</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" href="/docs/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-init.js"></script>
</body>
</html>
""".encode()
REDOC_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE}</title>
<link rel="icon" href="/docs/favicon.png">
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/redoc/redoc.standalone.js"></script>
</body>
</html>
""".encode()

# Scripts only from this server, none inline (checked in Chromium: tests/local/test_api_docs.py). ReDoc also adds
# <style> elements as it draws (styled-components), runs its search in a worker made from a blob: URL, and shows
# its maker's logo from cdn.redoc.ly, which the policy blocks (ReDoc then leaves it out).
_POLICY = "default-src 'none'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
_POLICY += "frame-ancestors 'none'; "
SWAGGER_CSP = _POLICY + "script-src 'self'; style-src 'self'"
REDOC_CSP = _POLICY + "script-src 'self'; style-src 'self' 'unsafe-inline'; worker-src blob:"

# URL path: (body or the name of a file of fastapi-offline's static/, content type, policy of a page).
FILES: dict[str, tuple[bytes | str, str, str | None]] = {
    "/docs": (SWAGGER_PAGE, HTML, SWAGGER_CSP),
    "/docs/": (SWAGGER_PAGE, HTML, SWAGGER_CSP),
    "/docs/swagger-init.js": (SWAGGER_INIT, JS, None),
    "/docs/swagger-ui-bundle.js": ("swagger-ui-bundle.js", JS, None),
    "/docs/swagger-ui.css": ("swagger-ui.css", CSS, None),
    "/docs/favicon.png": ("favicon.png", "image/png", None),
    "/redoc": (REDOC_PAGE, HTML, REDOC_CSP),
    "/redoc/": (REDOC_PAGE, HTML, REDOC_CSP),
    "/redoc/redoc.standalone.js": ("redoc.standalone.js", JS, None),
}
# The console's headers (serving.console), the policy apart: each page has its own.
HEADERS = {"X-Content-Type-Options": "nosniff"} | {
    name: value for name, value in console.HEADERS.items() if name != "Content-Security-Policy"
}


def static_folder() -> Path:
    """Where fastapi-offline keeps Swagger UI's and ReDoc's files (found without importing it: that imports FastAPI's
    static file machinery for nothing)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the API documentation pages need the fastapi-offline package: pip install fastapi-offline")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@lru_cache(maxsize=len(FILES))
def asset(path: str) -> Asset:
    """The file served at URL path (read once per process, on its first request)."""
    source, media_type, _policy = FILES[path]
    body = source if isinstance(source, bytes) else (static_folder() / source).read_bytes()
    return Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


def response(path: str, if_none_match: str | None = None) -> Response:
    """The response for a documentation path: the file (with the page's policy), or 304 when the client's copy is
    current; 503 saying what to install when fastapi-offline is missing."""
    try:
        found = asset(path)
    except (ConfigError, OSError) as err:
        message = err.message if isinstance(err, ConfigError) else f"the API documentation files cannot be read: {err}"
        return Response(
            json.dumps({"detail": message}).encode(),
            status_code=503,
            media_type="application/json",
            headers={"X-Content-Type-Options": "nosniff"},
        )
    policy = FILES[path][2]
    return console.conditional(
        found, {**HEADERS, "Content-Security-Policy": policy} if policy else HEADERS, if_none_match
    )
