"""uvicorn's HTTP protocol (httptools) with limits on a request's head: its size (431) and how long it takes (408).

uvicorn bounds neither with httptools (only its h11 protocol has a size limit, answered 400): a client could send an
endless header, held in memory and parsed on the event loop, or keep a connection open by sending a header line
now and then. API Gateway sets such limits on AWS; this is the local server's equivalent.
"""

from __future__ import annotations

import asyncio
import json
from functools import lru_cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MESSAGES = {
    400: "invalid HTTP request",
    408: "the request line and headers took too long to arrive",
    431: "the request line and headers are larger than the limit of {limit} bytes",
}


class _HeadTooLarge(Exception):
    pass


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol refusing request heads over max_head_bytes (431) or slower than head_timeout (408)."""

    max_head_bytes = 16384
    head_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # between requests, or inside a request's line and headers
        self._head_received = 0  # bytes received while reading the head (framing included)
        self._head_parsed = 0  # bytes of URL, names and values the parser handed over
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a request is closed after the same time (uvicorn would keep it forever).
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)
            # Checked before parsing: what came before this chunk is already too much, whatever the chunk holds.
            if self._head_received > self.max_head_bytes:
                return self._refuse(431)
            self._head_received += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._head_parsed = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_parsed += size
        if self._head_parsed > self.max_head_bytes:
            self._refusal = 431
            raise _HeadTooLarge()  # httptools stops parsing; data_received answers through send_400_response

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_received = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head = True
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        if self._head_received:
            self._refuse(408)
        else:
            self.transport.close()  # nothing asked, nothing to answer

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a request the parser refuses: a JSON error like every other, or the 431.
        self._refuse(self._refusal or 400)

    def _refuse(self, status: int) -> None:
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        if status != 400:  # uvicorn has logged its own warning for a 400
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            self.logger.warning("%d for %s: %s", status, client, MESSAGES[status].format(limit=self.max_head_bytes))
        body = json.dumps({"detail": MESSAGES[status].format(limit=self.max_head_bytes)}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-content-type-options: nosniff\r\n",
            b"connection: close\r\n",
            b"\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


@lru_cache(maxsize=8)
def limited_protocol(max_head_bytes: int, head_timeout: float) -> type[LimitedHttpToolsProtocol]:
    """The protocol class with these limits (uvicorn takes a class, not an instance; one class per pair)."""
    return type(
        LimitedHttpToolsProtocol.__name__,
        (LimitedHttpToolsProtocol,),
        {"max_head_bytes": max_head_bytes, "head_timeout": head_timeout},
    )
