"""What every benchmark part shares: progress messages, targets, statistics, memory, the machine, child processes."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from recommender.core.errors import ConfigError

# The repository: `python -m bench` runs from here (the `bench` package is not installed), and so do its children.
ROOT = Path(__file__).resolve().parents[1]


def shown(path: Path) -> str:
    """path as a user would type it from the current folder: relative when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """This process's environment with values set (None: unset) for the duration: local.server.start passes it to
    the server it spawns."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# What the wrk scripts here share (bench serve, soak): the requests prepared in init() used in turn, and every
# non-2xx answer counted, summed over wrk's threads by non2xx_total() in done(). Each script adds init and done.
WRK_COMMON = r"""local prepared = {}
local turn = 0
non2xx = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  turn = turn % #prepared + 1
  return prepared[turn]
end

function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

function non2xx_total()
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + (thread:get("non2xx") or 0) end
  return bad
end
"""

PARTS = ("train", "serve", "cold", "scale", "merch", "logins", "search", "widget", "events", "report")
GiB = 1024**3

# The issues' targets: (limit, direction), direction "max" means the measured value must not exceed the limit.
# Issue 13 raised those of training (csv 5 -> 3 s, xlsx 10 -> 7 s), serving (0.70 -> 0.85x the ceiling, p99
# 20 -> 10 ms) and the cold start (0.6 -> 0.40 s); bench/results/baseline.json keeps the figures from before it.
TARGETS: dict[str, tuple[float, str]] = {
    "train_csv_seconds": (3.0, "max"),
    "train_xlsx_seconds": (7.0, "max"),
    "train_holdout_ratio": (1.15, "max"),  # issue 25: the measurement model within 15% of HOLDOUT=0's time
    "serve_rps_ratio": (0.85, "min"),
    # Issue 20: /send_data with an API key within 5% of its requests/s with a token.
    "serve_key_rps_ratio": (0.95, "min"),
    # Issue 25: against the stricter ceiling (a bare Starlette app), requests/s and p99 as ratios of the same run.
    "serve_starlette_rps_ratio": (0.90, "min"),
    "serve_p99_ratio": (1.1, "max"),
    "serve_errors": (0, "max"),
    "cold_start_seconds": (0.40, "max"),
    "scale_train_seconds": (300.0, "max"),
    "scale_peak_rss_gib": (6.0, "max"),
    "scale_query_p99_ms": (2.0, "max"),
    "scale_hr_lift": (1.0, "min"),
    "merch_p99_ratio": (1.3, "max"),
    "merch_export_retail_seconds": (2.0, "max"),
    "merch_export_scale_seconds": (60.0, "max"),
    "logins_p99_ratio": (2.0, "max"),
    "logins_errors": (0, "max"),
    "logins_flood_ok_percent": (100.0 * 17 / 18, "min"),  # issue 22: 17 of 18 legitimate logins within 2 s
    "search_p99_ms": (5.0, "max"),
    "widget_paint_ms": (300.0, "max"),
    "events_per_second": (2000.0, "min"),
    "events_p99_ms": (50.0, "max"),
    "events_errors": (0, "max"),
    "report_seconds": (10.0, "max"),
}


def say(message: str) -> None:
    """Progress on stderr, so that stdout holds only the table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Statistics, memory and the machine.
# ---------------------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation; nan for no values."""
    if not len(values):
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def median(values: Sequence[float]) -> float:
    """The median; nan for no values."""
    return float(statistics.median(values)) if len(values) else float("nan")


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """The exponent a of value ~ size^a, by least squares on logs (1 = linear growth)."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.maximum(np.asarray(values, float), 1e-9))
    return float(np.polyfit(x, y, 1)[0]) if len(x) >= 2 and np.ptp(x) > 0 else float("nan")


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """The peak resident set size of this process since the last reset_peak_rss()."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> None:
    """Start a new peak (Linux 4.0+: writing 5 to clear_refs resets VmHWM); elsewhere peaks stay cumulative."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def machine_info() -> dict:
    """Cores, memory, CPU, Python and library versions, the git commit, and the load right now."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
    }
    try:
        meminfo = Path("/proc/meminfo").read_text()
        info["memory_gib"] = round(int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) * 1024 / GiB, 1)
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        info["cpu"] = model.group(1).strip() if model else platform.processor()
    except (OSError, AttributeError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    libs = {}
    for name in (
        "numpy",
        "scipy",
        "pandas",
        "annoy",
        "fastapi",
        "starlette",
        "pydantic",
        "uvicorn",
        "uvloop",
        "httptools",
        "mangum",
        "PyJWT",
    ):
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            libs[name] = None
    info["libraries"] = libs
    # BLAS threads matter on a shared machine (see README, Performance): record what the runs were allowed.
    info["blas_threads_env"] = {
        k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        pass
    try:
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        info["wrk"] = (wrk.stdout + wrk.stderr).splitlines()[0]
    except (OSError, IndexError):
        info["wrk"] = None
    return info


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------------------
# Child processes: timed work runs in a fresh interpreter, which prints one result line.
# ---------------------------------------------------------------------------------------------------------
RESULT_MARK = "BENCH_RESULT "


def run_child(task: str, args: dict, timeout: float = 3600) -> dict:
    """Run `python -m bench <task>` (cwd: the repository) with args as JSON; its result, or ConfigError with its
    stderr."""
    cmd = [sys.executable, "-m", "bench", task, json.dumps(args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK) :])
            result["_stderr"] = done.stderr
            return result
    tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
    raise ConfigError(f"benchmark step {task} failed (exit {done.returncode}):\n{tail}")


def print_result(result: dict) -> None:
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)
