"""Soak test (`make soak`): steady load of real baskets on the server `make run-prod` starts, for DURATION seconds,
while models are promoted, the product feed and the rules change, users come and go, and tokens expire and are
renewed. Reports errors, latency over time and memory growth after warm-up (bench/results/soak.json)."""

from __future__ import annotations

import http.client
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import WRK_COMMON, load_average, median, say
from recommender.core.errors import ConfigError
from recommender.core.settings import Settings

# A steady rate rather than wrk's flat out: each connection waits DELAY_MS between requests.
WRK_SCRIPT = (
    r"""-- Soak load for wrk (written by bench.soak): one "PATH<TAB>JSON" request a line of the file
-- named after "--", used in turn, with the token from SOAK_TOKEN; a fixed pause between a connection's requests.
"""
    + WRK_COMMON
    + r"""
function init(args)
  local headers = {["Authorization"] = "Bearer " .. os.getenv("SOAK_TOKEN"),
                   ["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    local path, body = line:match("^([^\t]+)\t(.*)$")
    table.insert(prepared, wrk.format("POST", path, headers, body))
  end
  math.randomseed(tonumber(os.getenv("SOAK_SEED") or "1"))
  turn = math.random(#prepared)
end

function delay()
  return tonumber(os.getenv("SOAK_DELAY_MS"))
end

function done(summary, latency, requests)
  local bad = non2xx_total()
  local e = summary.errors
  io.write(string.format('SOAK_WRK {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"timeout": %d, "non2xx": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n', summary.requests,
    summary.duration, e.connect, e.read, e.write, e.timeout, bad, latency:percentile(50), latency:percentile(99),
    latency.max))
end
"""
)


@dataclass
class SoakPlan:
    """What the soak does and how often."""

    duration: float = 600.0
    chunk_seconds: float = 10.0  # one wrk run: one point of the latency series
    connections: int = 8
    delay_ms: int = 15  # per connection between requests: several hundred requests/s in all
    promote_every: float = 30.0
    merch_every: float = 20.0  # a feed update, then a rules update, alternately
    users_every: float = 5.0
    token_minutes: int = 1  # tokens expire every minute and are renewed before they do
    warmup_seconds: float = 60.0  # RSS growth is measured after this, and after every version was served once
    versions: int = 3  # models trained up front, promoted in turn


@dataclass
class Events:
    """What happened beside the load, and what went wrong (any problem is an error)."""

    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)
        say(f"PROBLEM: {text}")


class Api:
    """A small HTTP client of the server under test."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            try:
                return response.status, json.loads(data)
            except ValueError:
                return response.status, data
        finally:
            conn.close()

    def login(self, username: str, password: str) -> tuple[int, Any]:
        form = urllib.parse.urlencode({"username": username, "password": password}).encode()
        return self.call("POST", "/token", form, {"Content-Type": "application/x-www-form-urlencoded"})


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recommender", *args], env=env, capture_output=True, text=True, timeout=300
    )


def _every(
    period: float, stop: threading.Event, action: Callable[[], None], events: Events, name: str
) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(period):
            try:
                action()
            except Exception as err:  # a soak reports whatever breaks, and goes on
                events.problem(f"{name}: {type(err).__name__}: {err}")

    thread = threading.Thread(target=loop, name=f"soak-{name}", daemon=True)
    thread.start()
    return thread


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def write_feed_csv(codes: list[str], prices: np.ndarray | None, rng: random.Random, path: Path) -> None:
    """A product feed for codes at path: prices near the model's, a few out of stock, categories and brands."""
    lines = ["StockCode,price,availability,category,brand"]
    for i, code in enumerate(codes):
        base = float(prices[i]) if prices is not None and prices[i] == prices[i] else 1.0 + i % 20
        price = round(base * rng.uniform(0.8, 1.2), 2)
        stock = "out_of_stock" if rng.random() < 0.03 else "in_stock"
        lines.append(f'"{code}",{price},{stock},"Dept {i % 7} > Line {i % 31}",Brand{i % 13}')
    path.write_text("\n".join(lines) + "\n")


def write_rules_yaml(codes: list[str], rng: random.Random, path: Path) -> None:
    """A rules file for codes at path: a block, do-not-pair rules, pins and boosts drawn from them."""
    picked = rng.sample(codes, min(len(codes), 40))
    blocked, pairs, pins, boosts = picked[:5], picked[5:15], picked[15:25], picked[25:40]
    lines = ["block:", "  codes: [" + ", ".join(json.dumps(c) for c in blocked) + "]", "do_not_pair:"]
    lines += [
        f"  - {{basket: {{code: [{json.dumps(a)}]}}, item: {{code: [{json.dumps(b)}]}}}}"
        for a, b in zip(pairs[::2], pairs[1::2])
    ]
    lines += ["pin:"] + [
        f"  - {{basket: {{code: [{json.dumps(a)}]}}, item: {{code: [{json.dumps(b)}]}}, position: {rng.randint(1, 5)}}}"
        for a, b in zip(pins[::2], pins[1::2])
    ]
    lines += ["boost:"] + [f"  - {{code: [{json.dumps(c)}], factor: {rng.choice([0.5, 1.5, 2.0])}}}" for c in boosts]
    path.write_text("\n".join(lines) + "\n")


def soak(plan: SoakPlan, template: Path, data: Path | None = None, settings: Settings | None = None) -> dict:
    """Run the soak; returns the report (see module docstring)."""
    from bench.deployment import free_port, sample_baskets
    from bench.serve import ensure_wrk
    from recommender.core import registry
    from recommender.core.storage import LocalStorage
    from recommender.local.server import start, stop
    from recommender.serving.model import load_model
    from recommender.serving.users import add_user, delete_user
    from recommender.tools import synthetic
    from recommender.training.ingest import load_transactions
    from recommender.training.pipeline import train

    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="recommender-soak-"))
    storage = LocalStorage(work / "data")
    rng = random.Random(0)
    events = Events()
    try:
        if data is None:
            data = work / "synthetic.csv"
            synthetic.write_csv(synthetic.DEFAULT, data)
        say(f"training {plan.versions} model versions on {data.name} (promoted in turn during the soak)")
        versions = [
            train(data, storage, progress=lambda _m: None, keep_versions=plan.versions + 5).version
            for _ in range(plan.versions)
        ]
        model = load_model(storage, versions[-1])
        codes, prices = list(model.items.codes), model.item_price
        del model
        baskets = sample_baskets(load_transactions(data), 20_000, seed=1)
        bodies = work / "bodies.tsv"
        with bodies.open("w") as f:
            for i, basket in enumerate(baskets):
                path = "/recommendations" if i % 10 == 0 else "/send_data"
                f.write(f"{path}\t{json.dumps({'product_list': basket, 'n': 10})}\n")
        script = work / "soak.lua"
        script.write_text(WRK_SCRIPT)
        password = secrets.token_urlsafe(16)
        add_user(storage, "soak", password, "Soak Test", "soak@example.com", rounds=4)

        settings = replace(
            settings or Settings(),
            storage_url=str(storage.root),
            run_dir=str(work / "run"),
            host="127.0.0.1",
            port=free_port(),
        )
        env = {
            **os.environ,
            "STORAGE_URL": settings.storage_url,
            "RUN_DIR": settings.run_dir,
            "TOKEN_MINUTES": str(plan.token_minutes),
            "BCRYPT_ROUNDS": "4",
            "USER_CACHE_SECONDS": "2",
            "MODEL_POLL_SECONDS": "2",
            "KEEP_VERSIONS": str(plan.versions + 5),
        }
        env.pop("JWT_SECRET", None)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            info = start(settings, template)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        api = Api(info.host, info.port)
        say(f"server pid {info.pid} on port {info.port}; soaking {plan.duration:g} s")

        # --- what happens beside the load ---------------------------------------------------------------
        # Replaced tokens wait here until they have expired, then must be refused (401, "expired").
        token_state: dict[str, Any] = {"token": None, "expires": 0.0, "old": []}

        def renew() -> str:
            status, body = api.login("soak", password)
            if status != 200:
                raise ConfigError(f"login answered {status}: {body}")
            if token_state["token"]:
                with events.lock:
                    token_state["old"].append((token_state["token"], token_state["expires"]))
            token_state["token"], token_state["expires"] = body["access_token"], time.time() + plan.token_minutes * 60
            events.count("token renewals")
            return body["access_token"]

        def check_expired() -> None:
            with events.lock:
                due = [old for old in token_state["old"] if time.time() > old[1] + 2]
                token_state["old"] = [old for old in token_state["old"] if old not in due]
            for token, _expires in due:
                status, body = api.call("GET", "/users/me", headers={"Authorization": f"Bearer {token}"})
                if status != 401 or "expired" not in str(body):
                    events.problem(f"an expired token answered {status} {body}")
                events.count("expired tokens refused")

        turn = {"model": 0, "merch": 0, "user": 0}

        def promote() -> None:
            version = versions[turn["model"] % len(versions)]
            turn["model"] += 1
            current = registry.active_version(storage)
            if version == current:
                version = versions[turn["model"] % len(versions)]
                turn["model"] += 1
            registry.stage(storage, version)
            done = _cli(env, "promote", "--force")  # make load_after_parallel_train FORCE=1
            if done.returncode != 0:
                events.problem(f"promote failed: {done.stderr.strip()}")
            events.count("model promotions")

        def merchandise() -> None:
            turn["merch"] += 1
            if turn["merch"] % 2:
                path = work / f"feed-{turn['merch']}.csv"
                write_feed_csv(codes, prices, rng, path)
                done, name = _cli(env, "feed", str(path)), "feed updates"
            else:
                path = work / f"rules-{turn['merch']}.yaml"
                write_rules_yaml(codes, rng, path)
                done, name = _cli(env, "rules", str(path)), "rules updates"
            if done.returncode != 0:
                events.problem(f"{name}: {done.stderr.strip()}")
            events.count(name)

        def users() -> None:
            turn["user"] += 1
            name, secret = f"visitor{turn['user']}", secrets.token_urlsafe(12)
            add_user(storage, name, secret, rounds=4)
            status, body = api.login(name, secret)
            if status != 200:
                raise ConfigError(f"new user's login answered {status}: {body}")
            headers = {"Authorization": f"Bearer {body['access_token']}"}
            status, me = api.call("GET", "/users/me", headers=headers)
            if status != 200 or me.get("username") != name:
                raise ConfigError(f"/users/me of a new user answered {status}: {me}")
            delete_user(storage, name)
            events.count("users added and deleted")
            deadline = time.monotonic() + 15
            while api.call("GET", "/users/me", headers=headers)[0] != 401:
                if time.monotonic() > deadline:
                    raise ConfigError(f"the token of deleted user {name} still works after 15 s")
                time.sleep(0.5)

        stop_event = threading.Event()
        series: list[dict] = []
        rss: list[tuple[float, float]] = []
        started = time.monotonic()

        def sample_rss() -> None:
            value = _rss_mib(info.pid)
            if value is not None:
                rss.append((time.monotonic() - started, value))

        threads = [
            _every(plan.promote_every, stop_event, promote, events, "promote"),
            _every(plan.merch_every, stop_event, merchandise, events, "merch"),
            _every(plan.users_every, stop_event, users, events, "users"),
            _every(5.0, stop_event, check_expired, events, "expiry"),
            _every(2.0, stop_event, sample_rss, events, "rss"),
        ]
        sample_rss()
        loads = [load_average()]
        try:
            renew()
            while time.monotonic() - started < plan.duration:
                if token_state["expires"] - time.time() < plan.chunk_seconds + 20:
                    renew()
                seconds = max(1, round(min(plan.chunk_seconds, plan.duration - (time.monotonic() - started))))
                t = time.monotonic() - started
                done = subprocess.run(
                    [
                        wrk,
                        "-t1",
                        f"-c{plan.connections}",
                        f"-d{seconds}s",
                        "--timeout",
                        "10s",
                        "-s",
                        str(script),
                        f"http://{info.host}:{info.port}",
                        "--",
                        str(bodies),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=seconds + 60,
                    env={
                        **os.environ,
                        "SOAK_TOKEN": token_state["token"],
                        "SOAK_DELAY_MS": str(plan.delay_ms),
                        "SOAK_SEED": str(len(series) + 1),
                    },
                )
                line = next((ln for ln in done.stdout.splitlines() if ln.startswith("SOAK_WRK ")), None)
                if line is None:
                    events.problem(f"wrk failed: {(done.stderr or done.stdout).strip()[-300:]}")
                    continue
                raw = json.loads(line[len("SOAK_WRK ") :])
                errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"] + raw["non2xx"]
                series.append(
                    {
                        "t": round(t, 1),
                        "seconds": raw["duration_us"] / 1e6,
                        "requests": raw["requests"],
                        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
                        "p50_ms": raw["p50_us"] / 1000,
                        "p99_ms": raw["p99_us"] / 1000,
                        "max_ms": raw["max_us"] / 1000,
                        "errors": errors,
                        "rss_mib": round(rss[-1][1], 1) if rss else None,
                    }
                )
                point = series[-1]
                say(
                    f"t={point['t']:>5.0f} s  {point['rps']:>6,.0f} requests/s  p50 {point['p50_ms']:.2f} ms  "
                    f"p99 {point['p99_ms']:.2f} ms  errors {errors}  RSS {point['rss_mib']} MiB"
                )
                if errors:
                    events.problem(
                        f"{errors} failed requests at t={point['t']:.0f} s "
                        f"(socket: {errors - raw['non2xx']}, non-2xx: {raw['non2xx']})"
                    )
                loads.append(load_average())
        finally:
            stop_event.set()
            for thread in threads:
                thread.join(timeout=120)
            stop(settings)
        log = (work / "run" / "server.log").read_text(errors="replace")
        logged = [
            line for line in log.splitlines() if "Traceback" in line or " ERROR " in line or "Exception in ASGI" in line
        ]
        for line in logged[:20]:
            events.problem(f"server log: {line}")
        swaps = log.count("serving model ")
    finally:
        pass
    report = summarize(plan, series, rss, events, loads, swaps)
    report["data"] = data.name
    if report["errors"] == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        report["workdir"] = str(work)
    return report


def summarize(
    plan: SoakPlan,
    series: list[dict],
    rss: list[tuple[float, float]],
    events: Events,
    loads: list[list[float]],
    swaps: int = 0,
) -> dict:
    """The report: totals, errors, the latency series, and RSS growth after warm-up."""
    requests = sum(p["requests"] for p in series)
    request_errors = sum(p["errors"] for p in series)
    # Warm-up lasts until every model version has been loaded once (the allocator then holds its high-water mark
    # of two models during a swap; each later swap replaces a model by one of the same size), at most 3/4 of the run.
    warm = min(max(plan.warmup_seconds, plan.versions * plan.promote_every), plan.duration * 0.75)
    window = max(plan.chunk_seconds * 2, min(60.0, (plan.duration - warm) / 3))
    after = [v for t, v in rss if t >= warm]
    first = [v for t, v in rss if warm <= t < warm + window]
    last = [v for t, v in rss if t >= (rss[-1][0] if rss else 0) - window]
    growth = (median(last) - median(first)) / median(first) * 100 if first and last else float("nan")
    return {
        "duration_s": plan.duration,
        "plan": {k: v for k, v in vars(plan).items()},
        "requests": requests,
        "requests_per_second": round(requests / max(1e-9, sum(p["seconds"] for p in series)), 1),
        "errors": request_errors + len(events.problems),
        "failed_requests": request_errors,
        "problems": events.problems[:50],
        "events": dict(events.counts),
        "model_swaps_logged": swaps,
        "p50_ms": {
            "median": median([p["p50_ms"] for p in series]),
            "max": max((p["p50_ms"] for p in series), default=None),
        },
        "p99_ms": {
            "median": median([p["p99_ms"] for p in series]),
            "max": max((p["p99_ms"] for p in series), default=None),
        },
        "rss_mib": {
            "warmup_s": warm,
            "window_s": window,
            "after_warmup": round(median(first), 1) if first else None,
            "end": round(median(last), 1) if last else None,
            "max": round(max(after), 1) if after else None,
            "growth_percent": round(growth, 2),
        },
        "load_average": {"start": loads[0] if loads else [], "max_1min": max((x[0] for x in loads if x), default=None)},
        "series": series,
    }
