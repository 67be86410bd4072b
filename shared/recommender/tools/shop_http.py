"""The shop simulator over HTTP (make simulate_shop): sessions of tools.shop_simulator sent to a running server as a
shop's pages would send them, POST /recommendations then POST /events, with an API key or a user's token."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from recommender.core.errors import InvalidInput
from recommender.tools.shop_simulator import (
    BATCH,
    DEFAULT,
    Answer,
    Behaviour,
    Line,
    Truth,
    check_answer,
    session_events,
    sessions,
    split,
)


@dataclass
class Server:
    """A running recommender, and how to call it."""

    url: str
    headers: dict[str, str]
    assign_by_session: bool = True  # send session_id in the body (servers with experiments assign by it)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer."""

    status_code: int
    headers: dict[str, str]  # names in lower case
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class HttpClient:
    """One kept-alive connection to the server (the standard library's: the light install has no HTTP client)."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float = 30.0) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"{url!r} is not an http:// or https:// address")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.headers, self.timeout = headers, timeout
        self.conn: Any = None

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> Reply:
        """POST body to path (one new connection and a second try when the kept one was closed)."""
        import http.client

        headers = {**self.headers, "Content-Type": content_type}
        for attempt in (1, 2):
            if self.conn is None:
                kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
                self.conn = kind(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", self.prefix + path, body=body, headers=headers)
                answer = self.conn.getresponse()
                return Reply(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
            except (OSError, http.client.HTTPException) as err:
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise InvalidInput(f"cannot reach {self.scheme}://{self.host}:{self.port}: {err}") from None
        raise AssertionError("unreachable")


def run_http(
    server: Server,
    baskets: list[list[Line]],
    count: int,
    seed: int = 0,
    behaviour: Behaviour = DEFAULT,
    workers: int = 8,
    prices: dict[str, float] | None = None,
    progress: Callable[[str], None] = lambda _t: None,
) -> Truth:
    """Simulate sessions against a running server: POST /recommendations, then the events by POST /events."""
    truth = Truth()
    local = threading.local()
    lock = threading.Lock()
    pending: list[dict] = []
    resend = random.Random(seed ^ 0xBA7C)
    started = time.monotonic()
    done = itertools.count(1)

    def client() -> HttpClient:
        if not hasattr(local, "client"):
            local.client = HttpClient(server.url, server.headers)
        return local.client

    def post_events(batch: list[dict]) -> None:
        body = orjson.dumps({"events": batch})
        for attempt in range(5):
            reply = client().post("/events", body)
            if reply.status_code in (429, 503):
                time.sleep(float(reply.headers.get("retry-after", "1")) * (attempt + 1))
                continue
            if reply.status_code != 200:
                raise InvalidInput(f"POST /events answered {reply.status_code}: {reply.text[:300]}")
            check_answer(reply.json(), len(batch))
            return
        raise InvalidInput("POST /events kept answering 429/503")

    def ask(held: list[str], session_id: str) -> Answer:
        body: dict[str, Any] = {"product_list": held, "n": behaviour.n}
        if server.assign_by_session:
            body["session_id"] = session_id
        for attempt in range(5):
            reply = client().post("/recommendations", orjson.dumps(body))
            if reply.status_code == 422 and "session_id" in body and "session_id" in reply.text:
                server.assign_by_session = False  # a server without experiments: no assignment to ask for
                body.pop("session_id")
                continue
            if reply.status_code in (429, 503):
                time.sleep(float(reply.headers.get("retry-after", "1")) * (attempt + 1))
                continue
            if reply.status_code != 200:
                raise InvalidInput(f"POST /recommendations answered {reply.status_code}: {reply.text[:300]}")
            data = reply.json()
            rid = data.get("recommendation_id") or reply.headers.get("x-recommendation-id")
            if not rid:
                raise InvalidInput("the server's answers carry no recommendation_id: update the server")
            parts = rid.split(".")
            arm = parts[2] if len(parts) == 5 and parts[2] != "-" else None
            items = data.get("items", [])
            prices = {i["stock_code"]: float(i["price"]) for i in items if isinstance(i.get("price"), int | float)}
            return Answer(rid, arm, tuple(i["stock_code"] for i in items), prices)
        raise InvalidInput("POST /recommendations kept answering 429/503")

    def one(job: tuple[int, str, list[Line], random.Random]) -> None:
        nonlocal pending
        _, session_id, basket, srng = job
        held, rest = split(basket, behaviour, srng)
        answer = ask([line.code for line in held], session_id)
        events, row = session_events(session_id, held, rest, answer, behaviour, srng, datetime.now(UTC), prices or {})
        if behaviour.drop_arm is not None and answer.arm == behaviour.drop_arm and srng.random() < behaviour.drop_share:
            return
        if row["impressions"]:
            truth.add(row)
        batch = None
        with lock:
            pending.extend(events)
            if len(pending) >= BATCH:
                batch, pending = pending, []
                again = resend.random() < behaviour.resend
        if batch:
            post_events(batch)
            truth.events += len(batch)
            if again:
                post_events(batch)
                truth.resent += len(batch)
        n = next(done)
        if n % 1000 == 0:
            progress(f"{n:,} sessions in {time.monotonic() - started:.0f} s")

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(one, sessions(baskets, count, seed)):
            pass
    if pending:
        post_events(pending)
        truth.events += len(pending)
    return truth
