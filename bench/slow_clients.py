"""Slow clients against the local server (`python -m bench.slow_clients`): many connections each POSTing /token with
Content-Length 60000 and sending one byte every 5 s, on a server that may open 1,024 files (a common default),
while a new client asks /health and a logged-in client /send_data (kept alive) every second. Reports how many slow
connections stay open, the two clients' latencies and statuses, the server's open files, and whether it logged
"Too many open files" (bench/results/slow-clients.{md,json})."""

from __future__ import annotations

import argparse
import asyncio
import csv
import http.client
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import load_average
from bench.deployment import free_port
from recommender.core.storage import LocalStorage
from recommender.serving.users import add_user
from recommender.tools import synthetic
from recommender.training.pipeline import train

ROOT = Path(__file__).resolve().parent.parent
HEAD = (
    b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 60000\r\n\r\n"
)
OPEN_FILES = 1024
PASSWORD = "slow-clients-" + secrets.token_hex(8)


async def _slow(port: int, seconds: float, open_now: list[int]) -> None:
    """One slow client, as in the report: no new connection once the server closes this one."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    open_now[0] += 1
    end = time.monotonic() + seconds
    try:
        writer.write(HEAD)
        while time.monotonic() < end:
            try:
                await asyncio.wait_for(reader.read(1024), min(5.0, max(end - time.monotonic(), 0.01)))
                break  # answered or closed by the server
            except TimeoutError:
                writer.write(b"a")
                await writer.drain()
    except OSError:
        pass
    finally:
        open_now[0] -= 1
        writer.close()


def _timed(call) -> tuple[float, int | str]:
    started = time.perf_counter()
    try:
        status: int | str = call()
    except (OSError, http.client.HTTPException) as err:
        status = type(err).__name__
    return time.perf_counter() - started, status


def _health(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _send_data(conn: http.client.HTTPConnection, token: str, code: str) -> int:
    body = json.dumps({"product_list": [code], "n": 5})
    conn.request("POST", "/send_data", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def _open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def run(connections: int, seconds: float, out: Path) -> dict:
    """Start a server, flood it, measure; write out/slow-clients.{md,json}."""
    work = Path(tempfile.mkdtemp(prefix="recommender-bench-slow-"))
    data = work / "tiny.csv"
    synthetic.write_csv(synthetic.preset("tiny"), data)
    storage = LocalStorage(work / "data")
    train(data, storage, progress=lambda _m: None)
    add_user(storage, "bench", PASSWORD, "Bench", "bench@example.com", rounds=4)
    with data.open(newline="") as f:
        code = next(csv.DictReader(f))["StockCode"]  # one basket will do: the latency is what counts
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "STORAGE_URL": str(work / "data"),
        "RUN_DIR": str(work / "run"),
        "JWT_SECRET": secrets.token_urlsafe(48),
    }
    subprocess.run(
        [sys.executable, "-m", "recommender", "start", "--template", str(ROOT / "template.yaml")],
        cwd=ROOT,
        env=env,
        check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES)),
    )
    pid = json.loads((work / "run" / "server.pid").read_text())["pid"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, connections + 256)), hard))
    samples: list[dict] = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request(
            "POST",
            "/token",
            f"username=bench&password={PASSWORD}",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        token = json.loads(conn.getresponse().read())["access_token"]

        async def flood() -> None:
            open_now = [0]
            clients = [asyncio.create_task(_slow(port, seconds, open_now)) for _ in range(connections)]
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                await asyncio.sleep(1.0)
                health = await asyncio.to_thread(_timed, lambda: _health(port))
                send = await asyncio.to_thread(_timed, lambda: _send_data(conn, token, code))
                samples.append(
                    {
                        "t": round(time.monotonic() - started, 1),
                        "slow_open": open_now[0],
                        "server_open_files": _open_files(pid),
                        "health_s": round(health[0], 4),
                        "health_status": health[1],
                        "send_data_s": round(send[0], 4),
                        "send_data_status": send[1],
                    }
                )
            await asyncio.gather(*clients)

        asyncio.run(flood())
        conn.close()
    finally:
        subprocess.run([sys.executable, "-m", "recommender", "stop"], cwd=ROOT, env=env, check=False)
    log = (work / "run" / "server.log").read_text(errors="replace")
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "connections": connections,
        "seconds": seconds,
        "server_open_files_limit": OPEN_FILES,
        "too_many_open_files_logged": log.count("Too many open files"),
        "limit_lines": [line for line in log.splitlines() if "connection limits:" in line],
        "health_all_200": all(s["health_status"] == 200 for s in samples),
        "send_data_all_200": all(s["send_data_status"] == 200 for s in samples),
        "health_max_s": max(s["health_s"] for s in samples),
        "send_data_max_s": max(s["send_data_s"] for s in samples),
        "peak_server_open_files": max(s["server_open_files"] for s in samples),
        "load_average": load_average(),
        "samples": samples,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "slow-clients.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "slow-clients.md").write_text(_markdown(result))
    return result


def _markdown(r: dict) -> str:
    rows = "\n".join(
        f"| {s['t']:g} | {s['slow_open']} | {s['server_open_files']} | {s['health_status']} {s['health_s'] * 1000:.1f} ms "
        f"| {s['send_data_status']} {s['send_data_s'] * 1000:.1f} ms |"
        for s in r["samples"]
        if s["t"] <= 6 or round(s["t"]) % 5 == 0
    )
    return f"""# Slow clients

`python -m bench.slow_clients --connections {r["connections"]} --seconds {r["seconds"]:g}`: {r["connections"]:,}
connections each POST `/token` with `Content-Length: 60000` and send one byte every 5 s, against `make run-prod`
with the default limits on a process allowed {r["server_open_files_limit"]:,} open files; every second a new
client asks `/health` and a client logged in before the flood asks `/send_data` on its kept-alive connection.
Load average during the run: {r["load_average"]}.

| s | slow connections open | server's open files | /health | /send_data |
|---|---|---|---|---|
{rows}

/health always 200: {r["health_all_200"]} (slowest {r["health_max_s"] * 1000:.1f} ms); /send_data always 200:
{r["send_data_all_200"]} (slowest {r["send_data_max_s"] * 1000:.1f} ms); the server's open files peaked at
{r["peak_server_open_files"]}; "Too many open files" logged {r["too_many_open_files_logged"]} times. What it logged:

```
{chr(10).join(r["limit_lines"])}
```

Before these limits (the same attack as reported): after 30 s 1,006 of 1,100 connections were still open, a new
client's `/health` failed, and the model watcher logged `Too many open files` at every poll.
"""


def main(argv: list[str] | None = None) -> int:
    """Command line: --connections, --seconds, --out."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    result = run(args.connections, args.seconds, args.out)
    print((args.out / "slow-clients.md").read_text())
    return 0 if result["health_all_200"] and result["send_data_all_200"] else 1


if __name__ == "__main__":
    sys.exit(main())
