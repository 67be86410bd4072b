"""The middleware of every app: request bodies over their path's limit refused with 413, and the security headers
(and HEAD answered like GET) on every response."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recommender.core.settings import Settings, get_settings
from recommender.serving.schemas import error_json

FEED_UPLOADS = ("/feed", "/feed/preview")


def body_limit(path: str, settings: Settings) -> int:
    """The largest request body a path takes: EVENTS_MAX_BODY_BYTES for /events (batches), FEED_UPLOAD_MAX_BYTES
    for the console's feed upload, else MAX_BODY_BYTES."""
    if path == "/events":
        return settings.events_max_body_bytes
    return settings.feed_upload_max_bytes if path in FEED_UPLOADS else settings.max_body_bytes


class BodyLimit:
    """Refuse request bodies over the path's limit (body_limit) with 413, whether or not they announce their length."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope.get("path", ""), get_settings())
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await self._refuse(send, limit)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        await too_large(limit)({"type": "http"}, _no_body, send)


def too_large(limit: int) -> JSONResponse:
    """The 413 answer to a body over limit bytes."""
    return JSONResponse(error_json(f"request body is larger than the limit of {limit} bytes"), status_code=413)


class _TooLarge(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff"}


class Headers:
    """Adds the security headers to every response (and Cache-Control: no-store where asked), and answers HEAD
    like GET without a body (the servers drop it) on every GET route."""

    def __init__(self, app: ASGIApp, no_store: bool = False) -> None:
        self.app = app
        self.extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        if no_store:
            # Tokens and who a token belongs to must not be kept by browsers or proxies (RFC 6749, section 5.1).
            self.extra += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = self.extra

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        if scope["method"] == "HEAD":
            # uvicorn and API Gateway see the request as HEAD and send no body; the routes see a GET.
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send_with_headers)
