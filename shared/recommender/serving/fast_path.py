"""The recommendation routes answered straight on ASGI, without FastAPI's request machinery.

A request to /send_data or /recommendations pays, through FastAPI, for five middleware layers, the router, the
route's request wrapper and a Request object's lazy parts: about as much as the model's own answer. A FastRoute
answers it with the same checks in the same order (body limit, caller, body, model) and the same functions, and
sends the same bytes (status, headers, body) as the FastAPI route would; an error goes through the app's own
exception handlers. A request carrying an Origin (a browser's: CORS headers to add) is left to the full app.
The FastAPI route stays declared as before, for the OpenAPI document and for those requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from recommender.core.settings import get_settings
from recommender.serving import web
from recommender.serving.model import Model

Parse = Callable[[bytes], Any]
Answer = Callable[[Any, Model], Response]
_NOSNIFF = [(k.lower().encode(), v.encode()) for k, v in web.SECURITY_HEADERS.items()]


class _TooLarge(Exception):
    pass


class FastRoute:
    """An ASGI app answering one recommendation route as its FastAPI route does: the caller of `scope` (web.caller),
    then parse(body), then the current model, then answer(basket, model)."""

    def __init__(self, app: web.App, scope: str, parse: Parse, answer: Answer) -> None:
        self.app, self.scope, self.parse, self.answer = app, scope, parse, answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = api_key = length = None
        for name, value in scope["headers"]:
            # The first of each header, as starlette's Headers.get reads them.
            if name == b"authorization":
                authorization = value if authorization is None else authorization
            elif name == b"x-api-key":
                api_key = value if api_key is None else api_key
            elif name == b"content-length":
                length = value if length is None else length
            elif name == b"origin":
                return await self.app.full(scope, receive, send)  # CORS headers to add: the full app's job
        path = scope["path"]
        limit = web.body_limit(path, get_settings())
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._send(send, web.too_large(limit))
        try:
            # In the FastAPI route's order: the caller, then the body (read then), then the model.
            await web.caller_of(
                self.scope,
                path,
                authorization and authorization.decode("latin-1"),
                api_key and api_key.decode("latin-1"),
            )
            basket = self.parse(await _body(receive, limit))
            response = self.answer(basket, await web.current_model())
        except _TooLarge:
            response = web.too_large(limit)
        except Exception as err:  # noqa: BLE001 - every error goes to the app's handler for it, as in FastAPI
            handler = _handler(self.app, err)
            response = await handler(Request(scope), err)
            if handler is self.app.exception_handlers.get(Exception):
                # Starlette's last resort: sent from outside every middleware, then raised for the server to log.
                await response(scope, receive, send)
                raise
        await self._send(send, response)

    @staticmethod
    async def _send(send: Send, response: Response) -> None:
        """Send response as the app's middleware would pass it on: the security headers added last."""
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers + _NOSNIFF}
        )
        await send({"type": "http.response.body", "body": response.body})


async def _body(receive: Receive, limit: int) -> bytes:
    """The request's body (ClientDisconnect if the client leaves first, _TooLarge past limit bytes)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _handler(app: web.App, err: Exception) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The app's exception handler for err, looked up by class as Starlette's middleware looks it up."""
    handlers = app.exception_handlers
    for cls in type(err).__mro__:
        if cls in handlers:
            return handlers[cls]
    return handlers[Exception]
