"""Serving benchmark: POST /send_data over real HTTP, the product as `make run-prod` runs it against the bare ceiling app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.common import ROOT, WRK_COMMON, median, say
from bench.deployment import Deployment, free_port, recommend_latency
from bench.in_process import asgi_latency, auth_header, product_app_in_process, profile_hotspots
from bench.options import Options
from bench.report import PartResult, Row, target_row
from recommender.core.errors import ConfigError

# ---------------------------------------------------------------------------------------------------------
# 2. Serving over real HTTP: the product as `make run-prod` runs it against the bare ceiling app.
# ---------------------------------------------------------------------------------------------------------
WRK_SCRIPT = (
    r"""-- POST /send_data for wrk (written by bench): request bodies from the file named after
-- "--", one JSON object a line, used in turn; the token from BENCH_TOKEN (an API key when it starts with rk_, sent
-- in X-API-Key). Counts every non-2xx answer.
"""
    + WRK_COMMON
    + r"""
function init(args)
  local credential = os.getenv("BENCH_TOKEN")
  local headers = {["Content-Type"] = "application/json"}
  if credential:sub(1, 3) == "rk_" then
    headers["X-API-Key"] = credential
  else
    headers["Authorization"] = "Bearer " .. credential
  end
  for line in io.lines(args[1]) do
    table.insert(prepared, wrk.format("POST", "/send_data", headers, line))
  end
end

function done(summary, latency, requests)
  local bad = non2xx_total()
  local e = summary.errors
  io.write(string.format('BENCH_WRK {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "non2xx": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "mean_us": %.1f}\n', summary.requests, summary.duration, summary.bytes, e.connect, e.read,
    e.write, e.status, e.timeout, bad, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""
)


def _post(url: str, token: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers=dict([auth_header(token), ("Content-Type", "application/json")])
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _wait_health(host: str, port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    from recommender.local.server import health

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"the ceiling app exited at start (status {process.returncode})")
        if health(host, port, timeout=1.0) is not None:
            return
        time.sleep(0.2)
    raise ConfigError(f"the ceiling app did not answer on port {port} within {timeout:.0f} s")


# The reference apps (bench.ceiling), each started with `python -m bench.ceiling <kind>`, by their name in the runs.
CEILINGS = {"ceiling": "fastapi", "ceiling, Starlette": "starlette"}


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_servers(dep: Deployment, template: Path, log_dir: Path) -> Iterator[dict[str, str]]:
    """The product started as `make run-prod` starts it (server.start) and the ceiling apps beside it; all stopped
    after. Their URLs by name: each ceiling of CEILINGS, and "product"."""
    from recommender.local.server import start, stop

    log_dir.mkdir(parents=True, exist_ok=True)
    ceilings: dict[str, tuple[subprocess.Popen, int]] = {}
    product = None
    try:
        for name, kind in CEILINGS.items():
            port = free_port()
            env = {**os.environ, "STORAGE_URL": dep.settings.storage_url, "HOST": "127.0.0.1", "PORT": str(port)}
            with open(log_dir / f"ceiling-{kind}.log", "ab") as log:
                ceilings[name] = (
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.ceiling", kind],
                        env=env,
                        cwd=ROOT,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    ),
                    port,
                )
        for process, port in ceilings.values():
            _wait_health("127.0.0.1", port, process)
        product = start(dep.settings, template)
        yield {
            **{name: f"http://127.0.0.1:{port}" for name, (_process, port) in ceilings.items()},
            "product": f"http://{product.host}:{product.port}",
        }
    finally:
        if product is not None:
            stop(dep.settings)
        for process, _port in ceilings.values():
            _stop(process)


def ensure_wrk() -> str:
    """The path of wrk; ConfigError saying how to install it when missing (make bench-serve installs it)."""
    path = shutil.which("wrk")
    if path is None:
        raise ConfigError(
            "wrk (the HTTP load generator) is not installed: `apt-get install -y wrk`, "
            "or run `make bench-serve`, which installs it"
        )
    return path


def run_wrk(
    url: str, script: Path, bodies: Path, token: str, seconds: float, connections: int = 16, threads: int = 1
) -> dict:
    """One wrk run against url; requests/s, latency percentiles (ms) and errors (socket errors + non-2xx)."""
    cmd = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
        "--",
        str(bodies),
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "BENCH_TOKEN": token}, timeout=seconds + 120
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_WRK ")), None)
    if line is None:
        raise ConfigError(f"wrk failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")
    raw = json.loads(line[len("BENCH_WRK ") :])
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "requests": raw["requests"],
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "errors": socket_errors + raw["non2xx"],
        "non2xx": raw["non2xx"],
        "socket_errors": socket_errors,
        "seconds": raw["duration_us"] / 1e6,
    }


def paired(runs: Sequence[dict], app: str, reference: str, key: str) -> list[float]:
    """app's figure over reference's, round by round (rounds where either did not run are left out)."""
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["app"]] = run[key]
    return [
        figures[app] / figures[reference]
        for _round, figures in sorted(by_round.items())
        if {app, reference} <= figures.keys()
    ]


def bench_serve(options: Options, dep: Deployment) -> PartResult:
    """Part 2: /send_data over loopback, product vs ceiling alternated, plus Model.recommend in-process."""
    from bench.ceiling import create_app as create_ceiling
    from bench.ceiling import create_starlette_app as create_starlette_ceiling
    from recommender.core.storage import LocalStorage, open_storage
    from recommender.serving.model import load_model
    from recommender.serving.tokens import load_secret

    ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="recommender-bench-wrk-"))
    try:
        script = work / "post.lua"
        script.write_text(WRK_SCRIPT)
        # Every request of a run carries a different sampled basket (repeats only as often as the sampling
        # repeats a basket), so the product's answer cache helps only as much as real traffic would let it.
        bodies = work / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"product_list": b, "n": 10}) + "\n" for b in dep.baskets))
        repeated = work / "repeated.jsonl"
        repeated.write_text("".join(bodies.read_text().splitlines(keepends=True)[: options.cached_baskets]))
        runs: list[dict] = []
        with running_servers(dep, options.template, work / "logs") as urls:
            for name, url in urls.items():  # each answers correctly before it is measured
                status, body = _post(url + "/send_data", dep.token, bodies.read_text().splitlines()[0].encode())
                if status != 200 or len(json.loads(body)["result"]["recommendation"]) != 10:
                    raise ConfigError(f"{name} answered {status} {body[:200]!r} before the load test")
                say(f"warming up {name} ({options.warmup_seconds:g} s)")
                run_wrk(url + "/send_data", script, bodies, dep.token, options.warmup_seconds, options.connections)
            for round_ in range(options.serve_rounds):
                # The Starlette ceiling and the product right after it (their ratios are taken round by round), the
                # product with an API key (issue 20: within 5% of it with a token), then the FastAPI ceiling.
                for name, url, credential in (
                    ("ceiling, Starlette", urls["ceiling, Starlette"], dep.token),
                    ("product", urls["product"], dep.token),
                    *((("product, API key", urls["product"], dep.key),) if dep.key else ()),
                    ("ceiling", urls["ceiling"], dep.token),
                ):
                    say(f"round {round_ + 1}: {name}, {options.serve_seconds:g} s at concurrency {options.connections}")
                    run = run_wrk(
                        url + "/send_data", script, bodies, credential, options.serve_seconds, options.connections
                    )
                    runs.append({"app": name, "round": round_ + 1, **run})
                    say(
                        f"  {run['rps']:,.0f} requests/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, "
                        f"{run['errors']} errors"
                    )
            say(
                f"product with {options.cached_baskets:,} baskets cycled (ANSWER_CACHE="
                f"{dep.settings.answer_cache}), {options.serve_seconds:g} s"
            )
            run = run_wrk(
                urls["product"] + "/send_data", script, repeated, dep.token, options.serve_seconds, options.connections
            )
            runs.append({"app": "product, repeated baskets", "round": 1, **run})
            say(f"  {run['rps']:,.0f} requests/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def pick(app: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["app"] == app]

    summary = {
        app: {
            "rps": median(pick(app, "rps")),
            "p50_ms": median(pick(app, "p50_ms")),
            "p99_ms": median(pick(app, "p99_ms")),
            "errors": int(sum(pick(app, "errors"))),
        }
        for app in (*CEILINGS, "product")
    }
    # Each ratio round by round (the runs of a round ran back to back), then the median of the rounds.
    ratios = paired(runs, "product", "ceiling", "rps")
    ratio = median(ratios)
    strict_ratios = paired(runs, "product", "ceiling, Starlette", "rps")
    p99_ratios = paired(runs, "product", "ceiling, Starlette", "p99_ms")
    key_ratios = paired(runs, "product, API key", "product", "rps")
    model = load_model(LocalStorage(dep.folder), dep.version)  # no answer cache: every call computes
    measured = dep.baskets[: options.baskets]
    say(f"in-process Model.recommend over {len(measured):,} baskets")
    inproc = recommend_latency(model, measured, n=10, repeats=options.latency_repeats)
    say("in-process ASGI calls of the apps (no sockets), and a profile of the product's")
    payloads = [json.dumps({"product_list": b, "n": 10}).encode() for b in dep.baskets]
    measured_bodies, warm_bodies = payloads[: options.baskets], payloads[-200:]
    profiled = payloads[options.baskets : options.baskets + 500]
    secret = load_secret(dep.settings, open_storage(dep.settings))
    asgi = {
        "ceiling": asgi_latency(
            create_ceiling(secret, dep.settings.jwt_algorithm), measured_bodies, dep.token, warm_bodies
        ),
        "ceiling, Starlette": asgi_latency(
            create_starlette_ceiling(secret, dep.settings.jwt_algorithm), measured_bodies, dep.token, warm_bodies
        ),
    }
    with product_app_in_process(dep, options.template) as app:
        asgi["product"] = asgi_latency(app, measured_bodies, dep.token, warm_bodies)
        if dep.key:
            asgi["product, API key"] = asgi_latency(app, measured_bodies, dep.key, warm_bodies)
        hotspots = profile_hotspots(app, profiled, dep.token)
    prod, ceil, strict = summary["product"], summary["ceiling"], summary["ceiling, Starlette"]
    cached = next(r for r in runs if r["app"] == "product, repeated baskets")

    def in_process(app: str) -> str:
        return f"{asgi[app]['p50_us']:,.0f}"

    def listed(values: list[float]) -> str:
        return "paired runs: " + ", ".join(f"{r:.2f}" for r in values)

    rows = [
        Row(
            "serve",
            "Starlette ceiling: requests/s (median)",
            round(strict["rps"]),
            "req/s",
            note=f"p50 {strict['p50_ms']:.2f} ms, p99 {strict['p99_ms']:.2f} ms, {strict['errors']} errors",
        ),
        Row(
            "serve",
            "FastAPI ceiling: requests/s (median)",
            round(ceil["rps"]),
            "req/s",
            note=f"p50 {ceil['p50_ms']:.2f} ms, p99 {ceil['p99_ms']:.2f} ms, {ceil['errors']} errors",
        ),
        Row(
            "serve",
            "product: requests/s (median)",
            round(prod["rps"]),
            "req/s",
            note=f"p50 {prod['p50_ms']:.2f} ms, p99 {prod['p99_ms']:.2f} ms",
        ),
        target_row(
            "serve",
            "product / Starlette ceiling requests/s (median of paired runs)",
            "serve_starlette_rps_ratio",
            round(median(strict_ratios), 3),
            "x",
            f"{listed(strict_ratios)}; in-process app p50 {in_process('product')} µs vs the Starlette ceiling's "
            f"{in_process('ceiling, Starlette')}, of which Model.recommend {inproc['p50_us']:,.0f}",
        ),
        target_row(
            "serve",
            "product / Starlette ceiling p99 latency (median of paired runs)",
            "serve_p99_ratio",
            round(median(p99_ratios), 3),
            "x",
            f"{listed(p99_ratios)}; p99 {prod['p99_ms']:.2f} ms vs the Starlette ceiling's {strict['p99_ms']:.2f} ms "
            "(medians; wrk, uvicorn and the app share the cores)",
        ),
        target_row(
            "serve",
            "product / FastAPI ceiling requests/s (median of paired runs)",
            "serve_rps_ratio",
            round(ratio, 3),
            "x",
            f"{listed(ratios)}; in-process FastAPI ceiling p50 {in_process('ceiling')} µs",
        ),
        *(
            [
                target_row(
                    "serve",
                    "product with an API key / with a token: requests/s (median of paired runs)",
                    "serve_key_rps_ratio",
                    round(median(key_ratios), 3),
                    "x",
                    f"{listed(key_ratios)}; in-process app p50 {in_process('product, API key')} µs with the key, "
                    f"{in_process('product')} with the token",
                )
            ]
            if key_ratios
            else []
        ),
        target_row(
            "serve",
            "product: errors (socket + non-2xx)",
            "serve_errors",
            prod["errors"],
            "",
            f"of {sum(pick('product', 'requests')):,} requests",
        ),
        Row(
            "serve",
            "in-process Model.recommend p50",
            round(inproc["p50_us"], 1),
            "µs",
            note=f"n=10, {inproc['calls']:,} baskets of {inproc['mean_basket']:.1f} items on average, no cache",
        ),
        Row("serve", "in-process Model.recommend p99", round(inproc["p99_us"], 1), "µs"),
        Row(
            "serve",
            "product, repeated baskets: requests/s",
            round(cached["rps"]),
            "req/s",
            note=f"{options.cached_baskets:,} baskets cycled, ANSWER_CACHE={dep.settings.answer_cache}; "
            f"p99 {cached['p99_ms']:.2f} ms",
        ),
        Row(
            "serve",
            "in-process product app (ASGI, no sockets) p50",
            round(asgi["product"]["p50_us"], 1),
            "µs",
            note=f"p99 {asgi['product']['p99_us']:,.0f} µs; Starlette ceiling p50 {in_process('ceiling, Starlette')} "
            f"µs, FastAPI ceiling p50 {in_process('ceiling')} µs",
        ),
    ]
    md = serve_markdown(options, dep, runs, asgi, inproc, hotspots)
    from recommender.local.server import uvicorn_options

    details = {
        "runs": runs,
        "summary": summary,
        "ratio": ratio,
        "paired_ratios": ratios,
        "starlette_paired_ratios": strict_ratios,
        "starlette_p99_paired_ratios": p99_ratios,
        "key_paired_ratios": key_ratios,
        "in_process": inproc,
        "pool_baskets": len(dep.baskets),
        "pool_distinct": len({tuple(sorted(b)) for b in dep.baskets}) / len(dep.baskets),
        "asgi": asgi,
        "hotspots": hotspots,
        "uvicorn": {k: v for k, v in uvicorn_options(dep.settings).items() if k not in ("host", "port")},
        "connections": options.connections,
        "seconds": options.serve_seconds,
        "model_version": dep.version,
    }
    return PartResult("serve", rows, details, "", 0, [], [], options.quick, md)


def serve_markdown(
    options: Options, dep: Deployment, runs: list[dict], asgi: dict, inproc: dict, hotspots: list[dict]
) -> str:
    """The serve part's section of the results: how it ran, every run, and where a request's time goes."""
    distinct = len({tuple(sorted(b)) for b in dep.baskets}) / len(dep.baskets)
    md = [
        "## Serving",
        "",
        f"`POST /send_data` over loopback with wrk ({options.connections} connections, 1 thread, "
        f"{options.serve_seconds:g} s a run, {options.serve_rounds} rounds after a {options.warmup_seconds:g} s "
        f"warm-up of each app), bodies taken in turn from {len(dep.baskets):,} baskets sampled "
        f"from Online Retail invoices ({distinct:.0%} distinct; a basket is 1-10 products of one invoice), n=10, "
        "so the product's answer cache (ANSWER_CACHE) serves only the repeats such sampling gives; one more "
        f"product run cycles {options.cached_baskets:,} baskets to show the cache's effect. Product: `server.start` "
        "(what `make run-prod` runs). Ceilings (`bench.ceiling`), with the same uvicorn options, each checking the "
        "same token with PyJWT on every request and answering a constant 10 items: a bare Starlette app that also "
        "parses the JSON body (the stricter one), and a bare FastAPI app. A round runs the Starlette ceiling, "
        "the product right after it, the product with a server API key (`X-API-Key`), then the FastAPI ceiling; "
        "ratios are taken round by round.",
        "",
        "| run | app | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r['round']} | {r['app']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
        f"{r['max_ms']:.1f} | {r['errors']} |"
        for r in runs
    ]
    md += [
        "",
        f"Where a request's time goes, in-process (median µs per request): Starlette ceiling app "
        f"{asgi['ceiling, Starlette']['p50_us']:,.0f}, FastAPI ceiling app {asgi['ceiling']['p50_us']:,.0f}, "
        f"product app {asgi['product']['p50_us']:,.0f}, of which Model.recommend {inproc['p50_us']:,.0f}; the rest "
        "of the HTTP time is uvicorn, the sockets and wrk sharing the two cores. Own time per request of the "
        f"product's hottest functions (cProfile, {min(500, len(dep.baskets))} requests; profiling inflates small "
        "functions):",
        "",
        "| function | own µs per request | calls per request |",
        "|---|---|---|",
    ]
    md += [f"| `{h['function']}` | {h['own_us_per_request']:,.0f} | {h['calls_per_request']:g} |" for h in hotspots]
    return "\n".join(md)
