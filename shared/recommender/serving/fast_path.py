"""The recommendation routes answered straight on ASGI, without FastAPI's request machinery.

Through FastAPI, a request to /send_data or /recommendations pays for five middleware layers, the router, the
route's request wrapper, a Request object's lazy parts, pydantic's validation of a two-field body and a response
object: together about as much as the model's own answer. A FastRoute answers it with the same checks in the same
order (body limit, caller, body, model) and the same functions, and sends the same bytes (status, headers, body) as
the FastAPI route; every error goes to the app's own exception handler for it. A request carrying an Origin (a
browser's, whose answer gets CORS headers) goes to the whole app. The FastAPI routes stay declared as they were:
they document the API (OpenAPI) and answer the browsers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from recommender.core.settings import get_settings
from recommender.serving import web
from recommender.serving.callers import caller_of
from recommender.serving.json_bodies import parse_json
from recommender.serving.merchandising import Options
from recommender.serving.middleware import SECURITY_HEADERS, body_limit, too_large
from recommender.serving.model import Model
from recommender.serving.schemas import MAX_BASKET, MAX_N

# An answer: the JSON content and the response's own headers (None: none), as web.FastJSON(content, headers=...)
# would send them.
Answer = Callable[[Any, Model], tuple[Any, dict[str, str] | None]]
_JSON = [(b"content-type", b"application/json")]
_NOSNIFF = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
_PLAIN_FIELDS = frozenset({"product_list", "n"})
_EXPLAINED = Options(explain=True)


class PlainBasket:
    """A body of product_list (and n) only, what most requests send, read without pydantic: the values and
    options the request models would give it."""

    __slots__ = ("product_list", "n")
    user_id = session_id = None

    def __init__(self, product_list: list[str], n: int) -> None:
        self.product_list, self.n = product_list, n

    def options(self, explain: bool) -> Options | None:
        """BasketIn.options of a body without options."""
        return _EXPLAINED if explain else None


def plain_basket(body: bytes) -> PlainBasket | None:
    """The body as a PlainBasket when it is a JSON object of a list of at most MAX_BASKET strings (product_list)
    and an integer n in 1..MAX_N (default 5), nothing else; None for anything else (the request model decides).

    Types are checked exactly as the request models' strict mode does (no bool for n, no number for a code)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= _PLAIN_FIELDS:
        return None
    codes, n = data.get("product_list"), data.get("n", 5)
    if type(codes) is not list or len(codes) > MAX_BASKET or type(n) is not int or not 1 <= n <= MAX_N:
        return None
    for code in codes:
        if type(code) is not str:
            return None
    return PlainBasket(codes, n)


class FastRoute:
    """An ASGI app answering one recommendation route as its FastAPI route does: the caller of `scope` (callers.caller),
    the body as schema (web.json_body), the current model, then answer(basket, model) sent as web.FastJSON."""

    def __init__(self, app: web.App, scope: str, schema: type[BaseModel], answer: Answer) -> None:
        self.app, self.scope, self.schema, self.answer = app, scope, schema, answer

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
                return await self.app.full(scope, receive, send)  # CORS headers to add: the whole app's job
        path = scope["path"]
        limit = body_limit(path, get_settings())
        if length is not None and length.isdigit() and int(length) > limit:
            return await _send_response(send, too_large(limit))
        try:
            # In the FastAPI route's order: the caller, then the body (read only now), then the model.
            await caller_of(self.scope, path, _text(authorization), _text(api_key))
            body = await _body(receive, limit)
            basket = plain_basket(body) or parse_json(self.schema, body)
            content, headers = self.answer(basket, await web.current_model())
        except _TooLarge:
            return await _send_response(send, too_large(limit))
        except Exception as err:  # noqa: BLE001 - every error goes to the app's handler for it, as in FastAPI
            handler = _handler(self.app, err)
            response = await handler(Request(scope), err)
            if handler is self.app.exception_handlers.get(Exception):
                # Starlette's last resort: sent from outside every middleware, then raised for the server to log.
                await response(scope, receive, send)
                raise
            return await _send_response(send, response)
        rendered = orjson.dumps(content)  # web.FastJSON's rendering
        await _send(send, json_headers(headers, len(rendered)), rendered, 200)


def json_headers(headers: dict[str, str] | None, length: int) -> list[tuple[bytes, bytes]]:
    """The raw headers of web.FastJSON(content, headers=headers) whose body is length bytes."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()] if headers else []
    return [*raw, (b"content-length", str(length).encode("latin-1")), *_JSON]


async def _send(send: Send, headers: list[tuple[bytes, bytes]], body: bytes, status: int) -> None:
    """Send an answer as the app's middleware would pass it on: the security headers added last."""
    await send({"type": "http.response.start", "status": status, "headers": headers + _NOSNIFF})
    await send({"type": "http.response.body", "body": body})


def _text(value: bytes | None) -> str | None:
    """A header's value as starlette's Headers.get gives it (an empty value is "", an absent one None)."""
    return None if value is None else value.decode("latin-1")


async def _send_response(send: Send, response: Response) -> None:
    await _send(send, response.raw_headers, response.body, response.status_code)


class _TooLarge(Exception):
    pass


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
