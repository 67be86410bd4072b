"""The web console's static files (package data in serving/static/), with the headers that keep the page safe.

The page is plain HTML, one script and one stylesheet; everything it shows comes from the API and is inserted as
text, and the Content-Security-Policy makes sure no other script can run: none inline, none from elsewhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from starlette.responses import Response

# Files the console is made of, by URL path; nothing else under static/ is served.
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}

# Product images come from the retailer's feed, on whatever host it names; nothing else leaves the page.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "Referrer-Policy": "no-referrer",  # image hosts of the feed learn nothing about this server
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",  # revalidate (ETag): a new deployment shows at once
}


@dataclass(frozen=True)
class Asset:
    """One file of the console, ready to send."""

    body: bytes
    media_type: str
    etag: str


@lru_cache(maxsize=len(FILES))
def asset(path: str) -> Asset:
    """The file served at URL path (read from the package once per process)."""
    name, media_type = FILES[path]
    body = resources.files("recommender.serving").joinpath("static", name).read_bytes()
    return Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


def response(path: str, if_none_match: str | None = None) -> Response:
    """The response for a console path: the file, or 304 when the client's copy is current."""
    return conditional(asset(path), HEADERS, if_none_match)


def conditional(found: Asset, headers: dict[str, str], if_none_match: str | None) -> Response:
    """The file with its headers and ETag, or 304 when If-None-Match names its ETag."""
    headers = {**headers, "ETag": found.etag}
    if if_none_match and found.etag in [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


def page_bytes() -> int:
    """The weight of the whole console, uncompressed (kept under 100 KB)."""
    return sum(len(asset(path).body) for path in FILES)
