"""Events benchmark: POST /events in batches of 50 to the local store (each batch written and fsynced before its
answer), on the server `make run-prod` starts: events/s and the latency of a batch, and a check that the log holds
every accepted event."""

from __future__ import annotations

import http.client
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import environment, percentile, say
from bench.deployment import free_port
from bench.options import Options
from bench.report import PartResult, Row, target_row
from recommender.core.event_log import RAW_PREFIX
from recommender.core.settings import Settings
from recommender.core.storage import LocalStorage
from recommender.serving.users import add_user

BATCH = 50
PASSWORD = "bench-events-password"


def _batch_template() -> bytes:
    """A batch of BATCH events whose ids hold the placeholder TAG________, replaced per request (no id repeats: a
    repeated one would be answered "duplicate" and not stored)."""
    now = int(time.time() * 1000)
    events = [
        {
            "event_id": f"TAG________-{i:02d}",
            "type": ("view", "click", "add_to_cart", "purchase")[i % 4],
            "ts": now,
            "session_id": f"session-{i % 7}",
            "user_id": f"customer-{i % 13}",
            "items": [{"stock_code": f"{85000 + i}A", "quantity": 1 + i % 3, "price": 2.55}],
            "value": 2.55,
            "currency": "GBP",
        }
        for i in range(BATCH)
    ]
    return json.dumps({"events": events}).encode()


class Poster:
    """Clients each posting batches over a kept-alive connection, one after another, until stopped."""

    def __init__(self, host: str, port: int, token: str, clients: int, run: str) -> None:
        self.host, self.port, self.token, self.run_name = host, port, token, run
        self.template = _batch_template()
        self.latencies: list[float] = []
        self.accepted = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.clients = clients
        self._threads: list[threading.Thread] = []

    def _client(self, client: int, interval: float | None) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        n = 0
        # Paced: the clients' batches are spread evenly over each interval, and a batch's latency counts from when
        # it was due, so a slow answer that delays the next batches counts against them too.
        due = time.perf_counter() + (interval or 0) * client / len(self._threads)
        while not self._stop.is_set():
            body = self.template.replace(b"TAG________", f"{self.run_name}c{client:02d}n{n:08d}".encode())
            n += 1
            if interval:
                if self._stop.wait(max(0.0, due - time.perf_counter())):
                    break
                started, due = due, due + interval
            else:
                started = time.perf_counter()
            try:
                conn.request("POST", "/events", body=body, headers=headers)
                response = conn.getresponse()
                answer = json.loads(response.read())
                ok = response.status == 200 and answer["accepted"] == BATCH
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            elapsed = time.perf_counter() - started
            with self._lock:
                if ok:
                    self.latencies.append(elapsed)
                    self.accepted += BATCH
                else:
                    self.errors += 1
        conn.close()

    def run(self, seconds: float, rate: float | None = None) -> dict:
        """Post for seconds, as fast as answers come or at `rate` events/s in all; events/s, batch latency
        percentiles and errors."""
        interval = self.clients * BATCH / rate if rate else None
        self._threads = [
            threading.Thread(target=self._client, args=(i, interval), daemon=True) for i in range(self.clients)
        ]
        started = time.perf_counter()
        for thread in self._threads:
            thread.start()
        time.sleep(seconds)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)
        elapsed = time.perf_counter() - started
        ms = np.asarray(self.latencies) * 1000
        return {
            "events": self.accepted,
            "events_per_second": self.accepted / elapsed,
            "batches_per_second": len(self.latencies) / elapsed,
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "max_ms": float(ms.max()) if len(ms) else float("nan"),
            "errors": self.errors,
        }


def _logged(root: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in (root / RAW_PREFIX).rglob("*.jsonl"))


def _token(host: str, port: int) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    form = f"username=bench&password={PASSWORD}"
    conn.request("POST", "/token", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    return json.loads(conn.getresponse().read())["access_token"]


def bench_events(options: Options) -> PartResult:
    """Part events: POST /events, batches of 50, to the local store, from a few concurrent clients."""
    from recommender.local.server import start, stop

    work = Path(tempfile.mkdtemp(prefix="recommender-bench-events-"))
    try:
        storage = LocalStorage(work / "data")
        add_user(storage, "bench", PASSWORD, rounds=4)
        settings = Settings(
            storage_url=str(storage.root), run_dir=str(work / "run"), host="127.0.0.1", port=free_port()
        )
        with environment(RUN_DIR=settings.run_dir, STORAGE_URL=settings.storage_url):
            info = start(settings, options.template)
        try:
            token = _token(info.host, info.port)
            say(f"warming up ({options.warmup_seconds:g} s)")
            Poster(info.host, info.port, token, options.events_clients, "w").run(options.warmup_seconds)
            clients, seconds = options.events_clients, options.events_seconds
            before = _logged(storage.root)
            say(
                f"POST /events, batches of {BATCH}, {clients} clients at {options.events_rate:,.0f} events/s, {seconds:g} s"
            )
            paced = Poster(info.host, info.port, token, clients, "p").run(seconds, options.events_rate)
            say(f"POST /events, batches of {BATCH}, {clients} clients as fast as answered, {seconds:g} s")
            flat_out = Poster(info.host, info.port, token, clients, "f").run(seconds)
            logged = _logged(storage.root) - before
        finally:
            stop(settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, run in (("paced", paced), ("as fast as answered", flat_out)):
        say(
            f"  {name}: {run['events_per_second']:,.0f} events/s, p50 {run['p50_ms']:.2f} ms, "
            f"p99 {run['p99_ms']:.2f} ms, {run['errors']} errors"
        )
    accepted = paced["events"] + flat_out["events"]
    say(f"  {logged:,} of {accepted:,} accepted events in the log")
    rate = options.events_rate
    rows = [
        target_row(
            "events",
            f"POST /events, batches of {BATCH}: events/s as fast as answered",
            "events_per_second",
            flat_out["events_per_second"],
            "/s",
        ),
        Row(
            "events",
            f"batch p50 / p99 as fast as answered ({options.events_clients} clients)",
            flat_out["p99_ms"],
            "ms",
            note=f"p50 {flat_out['p50_ms']:.2f} ms",
        ),
        Row("events", f"batch p50 at {rate:,.0f} events/s", paced["p50_ms"], "ms"),
        target_row("events", f"batch p99 at {rate:,.0f} events/s", "events_p99_ms", paced["p99_ms"], "ms"),
        target_row(
            "events",
            "errors (non-2xx, refused or duplicate events)",
            "events_errors",
            paced["errors"] + flat_out["errors"],
            "",
        ),
        Row("events", "accepted events missing from the log", accepted - logged, ""),
    ]
    md = [
        "## events details",
        "",
        f"The local server (`make run-prod`: uvicorn, one worker) storing to a local folder: {options.events_clients} "
        f"clients post batches of {BATCH} events (unique ids, all four types, an item each) over kept-alive "
        f"connections after {options.warmup_seconds:g} s of warm-up, {options.events_seconds:g} s at "
        f"{rate:,.0f} events/s in all (the batches spread evenly; a batch's latency counts from when it was due), "
        f"then {options.events_seconds:g} s each client posting its next batch as soon as the last is answered. "
        "Every batch is checked, appended to the process's segment in one write and fsynced before its answer; "
        f"afterwards the log is counted against the accepted events. Paced: {paced['events_per_second']:,.0f} "
        f"events/s achieved, worst batch {paced['max_ms']:.1f} ms; as fast as answered: "
        f"{flat_out['batches_per_second']:,.0f} batches/s, worst {flat_out['max_ms']:.1f} ms. The clients share "
        "the machine's cores with the server.",
    ]
    details = {"paced": paced, "as_fast_as_answered": flat_out, "logged": logged, "accepted": accepted}
    return PartResult("events", rows, details, "", 0, [], [], options.quick, "\n".join(md))
