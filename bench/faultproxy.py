"""An HTTP proxy that injects S3 faults between a client and an S3 endpoint (moto's server in tests): error
answers (500, 503 SlowDown), connection resets, stalls that outlast a client's timeout, and truncated bodies, on
chosen keys and methods, for a number of requests or at a seeded rate.

Point AWS_ENDPOINT_URL at `proxy.endpoint_url`; requests are path-style (`/bucket/key`), as botocore sends them to
an endpoint given by URL. Every request is recorded in `proxy.seen` with the fault it got, if any.
"""

from __future__ import annotations

import argparse
import http.client
import random
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import unquote, urlsplit

Kind = Literal["error", "reset", "stall", "truncate"]
KINDS = ("error", "reset", "stall", "truncate")
# Headers that describe one hop, not the message: never forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


@dataclass
class Fault:
    """One injected fault: what happens, to which requests, how often.

    kind: "error" answers `status` with an S3 error body (`code`); "reset" drops the connection with a TCP reset
    (after forwarding the request when `forward`, so the write happened but its answer is lost); "stall" answers
    nothing for `seconds`, then closes; "truncate" forwards and sends the full Content-Length but half the body.
    method and key (a regex searched in the object key) select requests; None matches all. `times` limits how many
    requests it hits (None: every one); `rate` is the chance of hitting each selected request.
    """

    kind: Kind
    method: str | None = None
    key: str | None = None
    times: int | None = None
    rate: float = 1.0
    status: int = 500
    code: str = "InternalError"
    seconds: float = 30.0
    forward: bool = False
    hits: int = 0

    def selects(self, method: str, key: str) -> bool:
        """Whether this fault is meant for a request (before its rate and remaining times are applied)."""
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method is None or self.method == method) and (
            self.key is None or re.search(self.key, key) is not None
        )


def slow_down(**selection) -> Fault:
    """S3's throttling answer: 503 SlowDown."""
    return Fault("error", status=503, code="SlowDown", **selection)


def internal_error(**selection) -> Fault:
    """S3's transient failure: 500 InternalError."""
    return Fault("error", status=500, code="InternalError", **selection)


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and the fault it got (None: forwarded untouched)."""

    method: str
    key: str
    fault: str | None


@dataclass
class FaultProxy:
    """The proxy; start() it (or use it as a context manager), inject() faults, clear() them, stop() it."""

    upstream: str
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(self.seed)
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        target = urlsplit(self.upstream)
        self._upstream = (target.hostname or "127.0.0.1", target.port or 80)

    @property
    def endpoint_url(self) -> str:
        """The URL to give clients instead of the upstream's."""
        return f"http://{self.host}:{self.port}"

    def inject(self, fault: Fault | None = None, /, **fields) -> Fault:
        """Add a fault (an object, or its fields as keywords); returns it (its `hits` count what it did)."""
        fault = fault or Fault(**fields)
        if fault.kind not in KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}: use one of {', '.join(KINDS)}")
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every fault: from now on requests pass untouched."""
        with self._lock:
            self.faults.clear()

    def requests(self, method: str | None = None, key: str | None = None) -> list[Seen]:
        """The requests seen so far, optionally those of one method and whose key matches a regex."""
        with self._lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method) and (key is None or re.search(key, s.key))
            ]

    def choose(self, method: str, key: str) -> Fault | None:
        """The fault a request gets (the first that selects it and wins its rate), recorded in `seen`."""
        with self._lock:
            chosen = None
            for fault in self.faults:
                if fault.selects(method, key) and (fault.rate >= 1 or self._random.random() < fault.rate):
                    fault.hits += 1
                    chosen = fault
                    break
            self.seen.append(Seen(method, key, chosen.kind if chosen else None))
            return chosen

    def start(self) -> FaultProxy:
        """Listen (on a free port when port is 0) and serve in a daemon thread."""
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening; stalled requests are released."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: tests read `seen` instead

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _key(self) -> str:
        path = urlsplit(self.path).path
        parts = path.lstrip("/").split("/", 1)
        return unquote(parts[1]) if len(parts) > 1 else ""

    def _handle(self) -> None:
        body = self._body()
        fault = self.owner.choose(self.command, self._key())
        if fault is None:
            return self._send(*self._forward(body))
        if fault.kind == "error":
            return self._error(fault)
        if fault.kind == "stall":
            self.owner._closing.wait(fault.seconds)
            self.close_connection = True
            return None
        if fault.kind == "reset":
            if fault.forward:
                self._forward(body)
            return self._reset()
        status, headers, data = self._forward(body)  # truncate
        self._send(status, headers, data, cut=max(1, len(data) // 2) if data else None)
        return None

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.owner._upstream, timeout=60)
        try:
            conn.request(
                self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None, headers=headers
            )
            response = conn.getresponse()
            data = response.read()
            return response.status, response.getheaders(), data
        finally:
            conn.close()

    def _send(self, status: int, headers: list[tuple[str, str]], data: bytes, cut: int | None = None) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        length = headers_length(headers) if self.command == "HEAD" else len(data)
        self.send_header("Content-Length", str(length))
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data if cut is None else data[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True

    def _error(self, fault: Fault) -> None:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
            f"<Message>injected fault</Message><RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        self.send_response(fault.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN, as a crashed peer or a middlebox does.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


def headers_length(headers: list[tuple[str, str]]) -> int:
    """The Content-Length among response headers (0 when absent)."""
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run the proxy in the foreground, e.g. `python -m bench.faultproxy http://127.0.0.1:5055
    --port 5199 --fault PUT:models/ACTIVE:error --fault GET::slowdown:0.2` (method:key regex:kind[:rate])."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream", help="the S3 endpoint to forward to, e.g. http://127.0.0.1:5055")
    parser.add_argument("--port", type=int, default=5199)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        help="METHOD:KEY-REGEX:KIND[:RATE]; KIND is error, slowdown, reset, stall or truncate; "
        "an empty METHOD or KEY matches all",
    )
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, port=args.port, seed=args.seed)
    for spec in args.fault:
        method, key, kind, *rate = spec.split(":")
        fault = slow_down() if kind == "slowdown" else Fault(kind)  # type: ignore[arg-type]
        fault.method, fault.key, fault.rate = method or None, key or None, float(rate[0]) if rate else 1.0
        proxy.inject(fault)
    proxy.start()
    print(f"fault proxy on {proxy.endpoint_url} -> {args.upstream}; Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    main()
