"""The shop widget's script (package data in serving/static/widget.js), served to any site's pages.

Shops load it with a plain `<script src>` from their own pages, so it is the one file of the API meant to be used
cross-origin: no CORS is needed for a classic script, and Cross-Origin-Resource-Policy lets pages that require it
(COEP) load it. A short public cache keeps it off the critical path of a shop's pages; a new deployment reaches
shoppers within that time, and the ETag makes each later check a 304.
"""

from __future__ import annotations

import gzip
import hashlib
from functools import lru_cache
from importlib import resources

from starlette.responses import Response

from recommender.serving.console import Asset, conditional

PATH = "/widget.js"
MEDIA_TYPE = "text/javascript; charset=utf-8"
HEADERS = {
    "Cache-Control": "public, max-age=300",
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Vary": "Accept-Encoding",
}


@lru_cache(maxsize=1)
def assets() -> tuple[Asset, Asset]:
    """The script as it is and gzipped (each with its own ETag, as the two are different bodies)."""
    body = resources.files("recommender.serving").joinpath("static", "widget.js").read_bytes()
    tag = hashlib.sha256(body).hexdigest()[:20]
    # mtime=0: the same bytes (and ETag) in every process and every deployment of the same script.
    packed = gzip.compress(body, compresslevel=9, mtime=0)
    return Asset(body, MEDIA_TYPE, f'"{tag}"'), Asset(packed, MEDIA_TYPE, f'"{tag}-gz"')


def gzipped_bytes() -> int:
    """What the script weighs on the wire, gzipped (kept at most 15 KB)."""
    return len(assets()[1].body)


def response(accept_encoding: str | None, if_none_match: str | None) -> Response:
    """The script (gzipped when the client takes gzip), or 304 when the client's copy is current."""
    plain, packed = assets()
    # API Gateway and the local server compress nothing themselves: this file is the one large answer a shop's
    # shoppers all fetch, so it is sent compressed when it can be.
    if accept_encoding and "gzip" in accept_encoding.lower():
        return conditional(packed, {**HEADERS, "Content-Encoding": "gzip"}, if_none_match)
    return conditional(plain, HEADERS, if_none_match)
