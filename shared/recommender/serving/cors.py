"""CORS on the routes API keys open: preflights answered for exactly the origins the keys list, never a wildcard.

A preflight carries no key, so it is answered for every origin some key of the route's scope lists; the request
that follows is then checked against its own key's origins (KeyCache.check). No credentials are ever allowed: keys
travel in a header, never in cookies.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recommender.core.errors import Forbidden, RecommenderError
from recommender.core.settings import get_settings
from recommender.serving.keys import SCOPES
from recommender.serving.resources import key_cache

# Each keyed route and the scope it needs.
KEYED_ROUTES = {path: scope for scope, paths in SCOPES.items() for path in paths}
ALLOW_HEADERS = "Content-Type, X-API-Key, Authorization"
EXPOSE_HEADERS = "X-Recommendation-Id, Retry-After"
# How long a browser may reuse a preflight's answer; a key revoked meanwhile is still refused on the request itself.
MAX_AGE_SECONDS = 600


async def _allowed_origins(scope: str) -> frozenset[str]:
    cache = key_cache(get_settings())
    if cache.due():
        await run_in_threadpool(cache.refresh)
    return cache.origins(scope)


async def preflight(request: Request, methods: str) -> Response:
    """The answer to OPTIONS on a keyed route: 204 with the CORS headers for a listed origin, 403 otherwise."""
    path = request.url.path
    scope = KEYED_ROUTES[path]
    origin = request.headers.get("origin")
    allow = {"Allow": f"{methods}, OPTIONS"}
    if origin is None:  # not a browser's preflight: say what the route answers
        return Response(status_code=204, headers=allow)
    if origin not in await _allowed_origins(scope):
        raise Forbidden(
            f"origin {origin[:200]} may not call {path}: no API key with the {scope!r} scope lists it "
            f"(make add_key NAME=... SCOPES={scope} ORIGINS={origin[:200]})"
        )
    return Response(
        status_code=204,
        headers={
            **allow,
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
            "Vary": "Origin",
        },
    )


class Cors:
    """Adds Access-Control-Allow-Origin (that origin, when a key of the route's scope lists it), the exposed
    headers and Vary: Origin to every answer of a keyed route to a request carrying an Origin; others pass as they
    are, at the cost of one dict lookup."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key_scope = KEYED_ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if key_scope is None or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        origin = next((value for name, value in scope["headers"] if name == b"origin"), None)
        if origin is None:
            return await self.app(scope, receive, send)
        try:
            allowed = origin.decode("latin-1") in await _allowed_origins(key_scope)
        except RecommenderError:
            allowed = False  # the keys cannot be read: the route itself answers why
        extra = [(b"vary", b"Origin")]
        if allowed:
            extra += [
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
            ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)
