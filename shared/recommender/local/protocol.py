"""uvicorn's HTTP protocol (httptools) with limits on a request's head: its size (431) and how long it takes (408);
on its body: how long it takes and how slowly it may come (408); and on connections (local.connections).

uvicorn bounds none of these with httptools (only its h11 protocol has a size limit, answered 400): a client could
send an endless header, held in memory and parsed on the event loop, keep a connection open by sending a byte now
and then, or open connections until the process has no file descriptor left. API Gateway sets such limits on AWS;
this is the local server's equivalent.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from recommender.core.settings import Settings
from recommender.local.connections import Registry, Tally

MESSAGES = {
    400: "invalid HTTP request",
    408: "the request line and headers took too long to arrive",
    431: "the request line and headers are larger than the limit of {limit} bytes",
}
# A body may start slowly (a client's first packet, a 100 Continue): its rate is judged after this many seconds.
BODY_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class Limits:
    """The local server's limits on requests and connections (the settings of the same names)."""

    max_header_bytes: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    min_body_bytes_per_second: int
    max_connections: int
    max_connections_per_address: int

    @classmethod
    def of(cls, settings: Settings, **changes: Any) -> Limits:
        """The limits the settings give (with changes, e.g. a max_connections the open files allow)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)} | changes)


# Each server's connections (tests run several servers in one process), forgotten with the server.
_registries: weakref.WeakKeyDictionary[ServerState, Registry] = weakref.WeakKeyDictionary()


class _HeadTooLarge(Exception):
    pass


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol refusing request heads over max_head_bytes (431) or slower than head_timeout (408), and
    bodies slower than body_timeout or min_body_rate (408), within the connection limits of limits."""

    limits = Limits.of(Settings())
    max_head_bytes = limits.max_header_bytes
    head_timeout = limits.header_timeout_seconds

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # between requests, or inside a request's line and headers
        self._head_received = 0  # bytes received while reading the head (framing included)
        self._head_parsed = 0  # bytes of URL, names and values the parser handed over
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: int | None = None
        self._in_body = False  # the head has arrived, not yet all of the body
        self._body_started = 0.0
        self._body_received = 0
        self._body_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None  # runs while the client does not read its answer
        self._answering = False  # a whole request has arrived and is not answered yet
        self._registry: Registry | None = None
        self.address = "unknown"

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.address = self.client[0] if self.client else "unknown"
        registry = _registries.get(self.server_state)
        if registry is None:
            registry = _registries[self.server_state] = Registry(
                self.limits.max_connections,
                self.limits.max_connections_per_address,
                Tally(self.logger, self.loop.call_later),
            )
        refusal = registry.admit(self)
        if refusal is not None:
            registry.tally.count("new connections refused (503)", self.address)
            return self._send_error(503, refusal, retry_after=1)
        self._registry = registry
        # A connection that never sends a request is closed after the same time (uvicorn would keep it forever).
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._registry is None:
            return  # refused: its answer is on the way out
        if not self._answering:
            self._registry.waiting(self)
        if self._reading_head:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)
            # Checked before parsing: what came before this chunk is already too much, whatever the chunk holds.
            if self._head_received > self.max_head_bytes:
                return self._refuse(431)
            self._head_received += len(data)
        super().data_received(data)
        if self._in_body and self._body_timer is None and not self.transport.is_closing():
            self._check_body()  # the head came, the body is not all here: from now on it is timed

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
        self._in_body = True
        self._body_started = self.loop.time()
        self._body_received = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_received += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._in_body = False
        self._cancel_body_timer()
        if self._registry is not None and not (self.cycle and self.cycle.response_complete):
            self._answering = True
            self._registry.answering(self)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and self._registry is not None and not self.transport.is_closing():
            self._answering = False
            if self._in_body or self._head_received:
                self._registry.waiting(self)  # answered before its body (or the next request) was all here
            else:
                self._registry.answered(self)

    def pause_writing(self) -> None:
        # The client reads its answer slower than it is written (or not at all): an answer being written is never
        # closed for another connection, so one that stalls for the body's time limit is cut off.
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.body_timeout_seconds, self._write_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        if self._registry is not None:
            self._registry.tally.count("answers not read in time, cut off", self.address)
        self.transport.abort()  # what is still buffered for it will never be read: drop it

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self._registry is not None:
            self._registry.remove(self)
        super().connection_lost(exc)

    def make_room(self) -> None:
        """Close this connection for a new one (local.connections): a request partly received is answered 503."""
        self._cancel_head_timer()
        self._cancel_body_timer()
        if self.transport.is_closing():
            return
        answered = self._in_body and self.cycle is not None and self.cycle.response_started
        if not answered and (self._in_body or (self._reading_head and self._head_received)):
            self._send_error(503, "this request was too slow while the server was at its connection limit", 1)
        else:
            self.transport.close()  # idle, or its answer is sent: nothing to say

    def _check_body(self) -> None:
        """408 for a body past its deadline or under the minimum rate; else look again when it next could be."""
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        limits = self.limits
        elapsed = self.loop.time() - self._body_started
        rate = limits.min_body_bytes_per_second
        if elapsed >= limits.body_timeout_seconds:
            return self._refuse_body(f"the request body did not arrive within {limits.body_timeout_seconds:g} s")
        if rate and elapsed >= BODY_GRACE_SECONDS and self._body_received < rate * elapsed:
            return self._refuse_body(
                f"the request body arrived at {self._body_received / elapsed:.0f} bytes/s; the minimum is {rate}"
            )
        # Bytes only add up: the rate cannot fail before the time when what came so far falls under it.
        due = limits.body_timeout_seconds
        if rate:
            due = min(due, max(BODY_GRACE_SECONDS, self._body_received / rate))
        self._body_timer = self.loop.call_later(max(due - elapsed, 0.05), self._check_body)

    def _refuse_body(self, detail: str) -> None:
        self._in_body = False
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # answered already (without reading the body): nothing more to say
            return
        if self._registry is not None:
            self._registry.tally.count("slow bodies refused (408)", self.address)
        if self.cycle is not None:
            # The app waiting for the body learns the client is gone, and anything it sends is dropped.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._send_error(408, detail)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

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
        detail = MESSAGES[status].format(limit=self.max_head_bytes)
        if status != 400:  # uvicorn has logged its own warning for a 400
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            self.logger.warning("%d for %s: %s", status, client, detail)
        self._send_error(status, detail)

    def _send_error(self, status: int, detail: str, retry_after: int | None = None) -> None:
        """Answer status with {"detail": detail} (and Retry-After) and close the connection."""
        if self.transport.is_closing():
            return
        body = json.dumps({"detail": detail}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-content-type-options: nosniff\r\n",
            *([b"retry-after: %d\r\n" % retry_after] if retry_after is not None else []),
            b"connection: close\r\n",
            b"\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


@lru_cache(maxsize=8)
def limited_protocol(limits: Limits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class with these limits (uvicorn takes a class, not an instance; one class per set)."""
    return type(
        LimitedHttpToolsProtocol.__name__,
        (LimitedHttpToolsProtocol,),
        {"limits": limits, "max_head_bytes": limits.max_header_bytes, "head_timeout": limits.header_timeout_seconds},
    )
