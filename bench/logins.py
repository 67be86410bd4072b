"""Logins benchmark: POST /send_data latency with and without a burst of clients sending wrong passwords to /token,
on the server `make run-prod` starts."""

from __future__ import annotations

import http.client
import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import environment, median, percentile, say
from bench.deployment import Deployment
from bench.login_flood import FLOOD_ADDRESSES, FLOOD_RATE, LEGIT_INTERVAL, WITHIN, FloodResult, add_shopper, run_flood
from bench.options import Options
from bench.report import PartResult, Row, target_row
from bench.serve import WRK_SCRIPT, ensure_wrk, run_wrk

# The scenario: 2 clients asking for recommendations, 20 others sending wrong passwords.
SEND_CONNECTIONS = 2
LOGIN_CLIENTS = 20


class LoginBurst:
    """Clients that each POST a wrong password to /token in a loop, over a kept-alive connection.

    polite: after a 429 or 503 a client waits Retry-After seconds, as HTTP clients with retries do (urllib3,
    requests' Retry, browsers); otherwise it asks again at once, as a flood would.
    """

    def __init__(self, host: str, port: int, clients: int, polite: bool = True) -> None:
        self.host, self.port, self.clients, self.polite = host, port, clients, polite
        self.statuses: Counter[int] = Counter()
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, i: int) -> None:
        body = f"username=guess-{i}&password=wrong-password-{i}"
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("POST", "/token", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status, wait = response.status, response.getheader("Retry-After")
            except (OSError, http.client.HTTPException):
                status, wait = 0, None
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            with self._lock:
                self.statuses[status] += 1
                self.latencies.append(time.perf_counter() - started)
            if self.polite and wait and status in (429, 503):
                self._stop.wait(min(float(wait), 5.0))
        conn.close()

    def __enter__(self) -> LoginBurst:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)


def bench_logins(options: Options, dep: Deployment) -> PartResult:
    """Part logins: /send_data p50/p99 quiet and under login bursts (polite and flooding), alternated per round."""
    from dataclasses import replace

    from recommender.local.server import start, stop

    ensure_wrk()
    seconds = options.logins_seconds
    work = Path(tempfile.mkdtemp(prefix="recommender-bench-logins-"))
    # Every guess reaches bcrypt (12 rounds, the default): the throttle, which would turn them into cheap 429s
    # after 50 from one address, is lifted for the measurement.
    settings = replace(dep.settings, run_dir=str(work / "run"))
    env = {
        "BCRYPT_ROUNDS": "12",
        "LOGIN_FAILURES_PER_USER": "1000000000",
        "LOGIN_FAILURES_PER_ADDRESS": "1000000000",
        "RUN_DIR": settings.run_dir,
    }
    runs: list[dict] = []
    try:
        flood = flood_scenario(options, dep, work)
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT)
        bodies = work / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"product_list": b, "n": 10}) + "\n" for b in dep.baskets))
        with environment(**env):
            info = start(settings, options.template)
        url = f"http://{info.host}:{info.port}/send_data"
        try:
            say(f"warming up ({options.warmup_seconds:g} s)")
            run_wrk(url, script, bodies, dep.token, options.warmup_seconds, SEND_CONNECTIONS)
            for round_ in range(options.serve_rounds):
                for burst in ("none", "polite", "flood"):
                    say(
                        f"round {round_ + 1}: /send_data at {SEND_CONNECTIONS} connections, {seconds:g} s, "
                        f"login burst: {burst}"
                    )
                    if burst == "none":
                        run, logins = run_wrk(url, script, bodies, dep.token, seconds, SEND_CONNECTIONS), None
                    else:
                        with LoginBurst(info.host, info.port, LOGIN_CLIENTS, polite=burst == "polite") as crowd:
                            time.sleep(1.0)  # the pool's queue fills before the measurement starts
                            run = run_wrk(url, script, bodies, dep.token, seconds, SEND_CONNECTIONS)
                        logins = {
                            "answers": dict(crowd.statuses),
                            "per_second": sum(crowd.statuses.values()) / (seconds + 1),
                            "p50_ms": percentile(np.asarray(crowd.latencies) * 1000, 50),
                            "p99_ms": percentile(np.asarray(crowd.latencies) * 1000, 99),
                        }
                    runs.append({"burst": burst, "round": round_ + 1, **run, "logins": logins})
                    say(
                        f"  {run['rps']:,.0f} requests/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, "
                        f"{run['errors']} errors" + (f"; logins {logins['answers']}" if logins else "")
                    )
        finally:
            stop(settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def summary(burst: str) -> dict:
        picked = [r for r in runs if r["burst"] == burst]
        return {
            "rps": median([r["rps"] for r in picked]),
            "p50_ms": median([r["p50_ms"] for r in picked]),
            "p99_ms": median([r["p99_ms"] for r in picked]),
            "errors": int(sum(r["errors"] for r in picked)),
        }

    quiet, polite, flooded = summary("none"), summary("polite"), summary("flood")
    ratio = polite["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else float("nan")
    flood_ratio = flooded["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else float("nan")
    rows = [
        Row(
            "logins",
            "/send_data quiet, 2 connections: p50 / p99",
            quiet["p99_ms"],
            "ms",
            note=f"p50 {quiet['p50_ms']:.2f} ms, {quiet['rps']:,.0f} requests/s",
        ),
        Row(
            "logins",
            f"same with {LOGIN_CLIENTS} clients guessing passwords: p99",
            polite["p99_ms"],
            "ms",
            note=f"p50 {polite['p50_ms']:.2f} ms, {polite['rps']:,.0f} requests/s; clients honour Retry-After",
        ),
        target_row("logins", "p99 under the login burst / quiet p99", "logins_p99_ratio", ratio, "x"),
        Row(
            "logins",
            "p99 under a flood (Retry-After ignored) / quiet p99",
            flood_ratio,
            "x",
            note=f"p99 {flooded['p99_ms']:.2f} ms, {flooded['rps']:,.0f} requests/s",
        ),
        target_row(
            "logins",
            "/send_data errors (socket + non-2xx)",
            "logins_errors",
            quiet["errors"] + polite["errors"] + flooded["errors"],
            "",
        ),
        flood_row(flood),
    ]
    md = [
        "## logins details",
        "",
        f"The server `make run-prod` starts (`server.start`; BCRYPT_ROUNDS=12, LOGIN_WORKERS, LOGIN_QUEUE and "
        f"LOGIN_NICE at their defaults, the guessing throttle lifted so that every guess costs a bcrypt check). "
        f"`wrk` sends /send_data on {SEND_CONNECTIONS} connections ({seconds:g} s a run) while {LOGIN_CLIENTS} "
        "client threads of the benchmark POST wrong passwords to /token on kept-alive connections: none, "
        "polite (a 429 or 503 is followed by its Retry-After wait) or flood (asked again at once); the three "
        f"alternate, {options.serve_rounds} rounds.",
        "",
        "| round | login burst | /send_data requests/s | p50 ms | p99 ms | errors | /token answers | /token p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        logins = r["logins"] or {}
        answers = ", ".join(f"{k}: {v:,}" for k, v in sorted(logins.get("answers", {}).items()))
        md.append(
            f"| {r['round']} | {r['burst']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['errors']} | {answers} | {logins.get('p99_ms', float('nan')):.0f} |"
        )
    md += ["", *flood_markdown(flood)]
    details = {
        "runs": runs,
        "quiet": quiet,
        "polite": polite,
        "flood": flooded,
        "wrong_password_flood": flood.summary(),
        "ratio": ratio,
        "flood_ratio": flood_ratio,
        "send_connections": SEND_CONNECTIONS,
        "login_clients": LOGIN_CLIENTS,
        "seconds": seconds,
    }
    return PartResult("logins", rows, details, "", 0, [], [], options.quick, "\n".join(md))


def flood_scenario(options: Options, dep: Deployment, work: Path) -> FloodResult:
    """The wrong-password flood, on its own server with every login setting at its default (the throttle on)."""
    from dataclasses import replace

    from recommender.core.storage import LocalStorage
    from recommender.local.server import start, stop

    password = add_shopper(LocalStorage(dep.folder))
    settings = replace(dep.settings, run_dir=str(work / "run-flood"))
    defaults = {name: None for name in ("LOGIN_FAILURES_PER_USER", "LOGIN_FAILURES_PER_ADDRESS", "LOGIN_WORKERS")}
    with environment(BCRYPT_ROUNDS="12", RUN_DIR=settings.run_dir, LOGIN_QUEUE=None, **defaults):
        info = start(settings, options.template)
    count = options.logins_flood_logins
    say(
        f"wrong-password flood: {len(FLOOD_ADDRESSES)} addresses at {FLOOD_RATE:g} requests/s, "
        f"{count} legitimate logins from another address every {LEGIT_INTERVAL:g} s"
    )
    try:
        result = run_flood(info.host, info.port, password, count)
    finally:
        stop(settings)
    figures = result.summary()
    say(
        f"  {result.succeeded_in_time} of {count} legitimate logins got a token within {WITHIN:g} s "
        f"(median {figures['legit_seconds_median']:.2f} s, slowest {figures['legit_seconds_max']:.2f} s); "
        f"flood: {figures['flood_per_second']:.0f} requests/s, answers {figures['flood_answers']}"
    )
    return result


def flood_row(flood: FloodResult) -> Row:
    """The table row of the flood: the share of legitimate logins that succeeded within 2 s."""
    figures = flood.summary()
    share = 100.0 * flood.succeeded_in_time / len(flood.logins) if flood.logins else float("nan")
    return target_row(
        "logins",
        f"legitimate logins with a token within {WITHIN:g} s under a {len(FLOOD_ADDRESSES)}-address flood",
        "logins_flood_ok_percent",
        share,
        "%",
        note=f"{flood.succeeded_in_time} of {len(flood.logins)}; slowest {figures['legit_seconds_max']:.2f} s; "
        f"flood {figures['flood_per_second']:.0f} requests/s",
    )


def flood_markdown(flood: FloodResult) -> list[str]:
    """The flood's paragraph and table of the details."""
    figures = flood.summary()
    lines = [
        f"Wrong-password flood: its own server (BCRYPT_ROUNDS=12, every LOGIN_* setting at its default, the "
        f"throttle on); {len(FLOOD_ADDRESSES)} client addresses (127.0.0.10-29) send wrong passwords to /token, "
        f"a new user name each time, {FLOOD_RATE:g} requests/s in all, ignoring Retry-After, while a legitimate "
        f"client from 127.0.0.200 logs in every {LEGIT_INTERVAL:g} s on a new connection.",
        "",
        "| legitimate login | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {i + 1} | {status} | {seconds:.2f} |" for i, (status, seconds) in enumerate(flood.logins)]
    answers = ", ".join(f"{k}: {v:,}" for k, v in sorted(figures["flood_answers"].items()))
    lines += ["", f"Flood: {figures['flood_per_second']:.1f} requests/s; answers {answers}."]
    return lines
