"""The wrong-password flood of the logins part: 20 source addresses send 55 wrong passwords a second to /token
(ignoring Retry-After) while a legitimate client, from another address, logs in every 2.5 s; what counts is how
many of its logins succeed within 2 s."""

from __future__ import annotations

import http.client
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode

# The scenario. Every 127.0.0.0/8 address is this machine's loopback on Linux, so each client binds its own.
FLOOD_ADDRESSES = [f"127.0.0.{10 + i}" for i in range(20)]
FLOOD_RATE = 55.0  # requests a second, from all flooding addresses together
CONNECTIONS_PER_ADDRESS = 3  # so a connection waiting for its answer does not slow the flood down
LEGIT_ADDRESS = "127.0.0.200"
LEGIT_INTERVAL = 2.5  # seconds between the legitimate client's logins
WITHIN = 2.0  # a legitimate login counts when it gets its token within this many seconds
USERNAME = "shopper"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class FloodResult:
    """What the flood and the legitimate client got."""

    logins: list[tuple[int, float]] = field(default_factory=list)  # the legitimate client's (status, seconds)
    flood_statuses: Counter[int] = field(default_factory=Counter)
    flood_seconds: float = 0.0

    @property
    def succeeded_in_time(self) -> int:
        """The legitimate logins answered 200 within WITHIN seconds."""
        return sum(1 for status, seconds in self.logins if status == 200 and seconds <= WITHIN)

    def summary(self) -> dict:
        """The figures the report shows."""
        times = sorted(seconds for _, seconds in self.logins)
        return {
            "legit_logins": len(self.logins),
            "legit_ok_within_2s": self.succeeded_in_time,
            "legit_statuses": dict(Counter(status for status, _ in self.logins)),
            "legit_seconds_median": times[len(times) // 2] if times else None,
            "legit_seconds_max": times[-1] if times else None,
            "flood_answers": dict(self.flood_statuses),
            "flood_per_second": sum(self.flood_statuses.values()) / self.flood_seconds if self.flood_seconds else 0.0,
        }


def add_shopper(storage: object) -> str:
    """Add the legitimate client's account (bcrypt at 12 rounds, the default) and return its password."""
    from recommender.serving.users import add_user

    password = secrets.token_urlsafe(16)
    add_user(storage, USERNAME, password, "Shopper", rounds=12)  # type: ignore[arg-type]
    return password


def _post(conn: http.client.HTTPConnection, body: str) -> int:
    conn.request("POST", "/token", body=body, headers=FORM)
    response = conn.getresponse()
    response.read()
    return response.status


class Flood:
    """Threads sending wrong passwords (a new user name each time: only the per-address limit applies) from every
    flooding address, paced to FLOOD_RATE in all, never waiting for Retry-After."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        count = len(FLOOD_ADDRESSES) * CONNECTIONS_PER_ADDRESS
        self._interval = count / FLOOD_RATE
        self._threads = [
            threading.Thread(target=self._client, args=(i, address, i * self._interval / count), daemon=True)
            for i, address in enumerate(a for a in FLOOD_ADDRESSES for _ in range(CONNECTIONS_PER_ADDRESS))
        ]
        self.started = self.stopped = 0.0

    def _connect(self, address: str) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=30, source_address=(address, 0))

    def _client(self, i: int, address: str, offset: float) -> None:
        conn, n = self._connect(address), 0
        due = time.monotonic() + offset
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            n += 1
            try:
                status = _post(conn, urlencode({"username": f"guess-{i}-{n}", "password": f"wrong-{n}"}))
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = self._connect(address)
            with self._lock:
                self.statuses[status] += 1
            due = max(due + self._interval, time.monotonic() - self._interval)  # late: no catch-up burst
        conn.close()

    def __enter__(self) -> Flood:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self.stopped = time.monotonic()
        for thread in self._threads:
            thread.join(timeout=40)


def legit_logins(host: str, port: int, password: str, count: int) -> list[tuple[int, float]]:
    """count logins of the legitimate client, one every LEGIT_INTERVAL s, each on a new connection (as a browser
    signing in would): (status, seconds until the answer) of each; status 0 when no answer came within 10 s."""
    body = urlencode({"username": USERNAME, "password": password})
    results, start = [], time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i * LEGIT_INTERVAL - time.monotonic()))
        began = time.perf_counter()
        conn = http.client.HTTPConnection(host, port, timeout=10, source_address=(LEGIT_ADDRESS, 0))
        try:
            status = _post(conn, body)
        except (OSError, http.client.HTTPException):
            status = 0
        finally:
            conn.close()
        results.append((status, time.perf_counter() - began))
    return results


def run_flood(host: str, port: int, password: str, count: int) -> FloodResult:
    """The scenario on a running server: the flood starts, 1 s later the legitimate logins, then the flood stops."""
    with Flood(host, port) as flood:
        time.sleep(1.0)  # the password-check queue is full before the first legitimate login
        logins = legit_logins(host, port, password, count)
    return FloodResult(logins, flood.statuses, flood.stopped - flood.started)
