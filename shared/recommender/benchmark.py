"""The project's benchmark (`make bench`): training speed, HTTP serving against the framework's ceiling, cold start
of the recommend function, and scale to 100k products; one table, written as JSON and Markdown.

Every figure that can be repeated is the median of repeated runs, and every ratio compares runs made in the same
invocation, because absolute times drift on a shared machine. Timed work runs in fresh child processes so that
memory peaks and import costs are those a user would see.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import ConfigError

PARTS = ("train", "serve", "cold", "scale")
GiB = 1024 ** 3

# The issue's targets: (limit, direction), direction "max" means the measured value must not exceed the limit.
TARGETS: dict[str, tuple[float, str]] = {
    "train_csv_seconds": (5.0, "max"),
    "train_xlsx_seconds": (10.0, "max"),
    "serve_rps_ratio": (0.70, "min"),
    "serve_p99_ms": (20.0, "max"),
    "serve_errors": (0, "max"),
    "cold_start_seconds": (0.6, "max"),
    "scale_train_seconds": (300.0, "max"),
    "scale_peak_rss_gib": (6.0, "max"),
    "scale_query_p99_ms": (2.0, "max"),
    "scale_hr_lift": (1.0, "min"),
}


def _say(message: str) -> None:
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
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform(), "hostname": socket.gethostname()}
    try:
        meminfo = Path("/proc/meminfo").read_text()
        info["memory_gib"] = round(int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) * 1024 / GiB, 1)
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        info["cpu"] = model.group(1).strip() if model else platform.processor()
    except (OSError, AttributeError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    libs = {}
    for name in ("numpy", "scipy", "pandas", "annoy", "fastapi", "starlette", "pydantic", "uvicorn", "uvloop",
                 "httptools", "mangum", "python-jose"):
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            libs[name] = None
    info["libraries"] = libs
    # BLAS threads matter on a shared machine (see README, Performance): record what the runs were allowed.
    info["blas_threads_env"] = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                                if k in os.environ}
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
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
# Results: rows of one table, written as JSON and Markdown.
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the result table."""

    part: str
    measure: str
    value: float | int | None
    unit: str
    target: str = ""         # e.g. "<= 5 s"; empty when the issue sets none
    met: bool | None = None  # None when there is no target
    note: str = ""           # the reason a target is missed, or context

    def shown(self) -> str:
        """The value as the table shows it."""
        if self.value is None:
            return "n/a"
        if isinstance(self.value, float):
            v = self.value
            text = f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:,.1f}"
        else:
            text = f"{self.value:,}"
        return f"{text} {self.unit}".strip()

    def status(self) -> str:
        """'met', 'MISSED' or '' (no target)."""
        return "" if self.met is None else "met" if self.met else "MISSED"


def target_row(part: str, measure: str, key: str, value: float | None, unit: str, note: str = "") -> Row:
    """A row checked against TARGETS[key]."""
    limit, direction = TARGETS[key]
    met = None if value is None or value != value else (value <= limit if direction == "max" else value >= limit)
    sign = "<=" if direction == "max" else ">="
    return Row(part, measure, value, unit, f"{sign} {limit:g}{' ' + unit if unit else ''}", met, note)


@dataclass
class PartResult:
    """What one part measured: table rows, details for the JSON/Markdown, the date and the machine load."""

    part: str
    rows: list[Row]
    details: dict
    started_at: str
    seconds: float
    load_before: list[float]
    load_after: list[float]
    quick: bool
    markdown: str = ""   # the part's detail section

    def to_json(self) -> dict:
        """JSON-ready form."""
        data = asdict(self)
        data["rows"] = [asdict(r) | {"shown": r.shown(), "status": r.status()} for r in self.rows]
        return data


def format_table(rows: Sequence[Row], markdown: bool = False) -> str:
    """The rows as one table: aligned text for the console, or Markdown."""
    header = ("part", "measure", "value", "target", "status", "note")
    lines = [(r.part, r.measure, r.shown(), r.target, r.status(), r.note) for r in rows]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])  # the note column runs free
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line).rstrip() for line in lines]
    return "\n".join(out)


def write_results(results: Sequence[PartResult], out_dir: Path, machine: dict, command: str) -> tuple[Path, Path]:
    """Save each part as <part>.json, then rebuild latest.json and latest.md from every part file in out_dir.

    A part run alone (make bench-serve) replaces only its own file; the combined table keeps the other parts'
    last results, each with its own date and machine load.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for result in results:
        data = {"machine": machine, "command": command, **result.to_json()}
        (out_dir / f"{result.part}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    parts = []
    for name in PARTS:
        path = out_dir / f"{name}.json"
        if path.exists():
            parts.append(json.loads(path.read_text()))
    combined = {"machine": machine, "generated_at": _now(), "parts": {p["part"]: p for p in parts}}
    json_path = out_dir / "latest.json"
    json_path.write_text(json.dumps(combined, indent=1, default=str) + "\n")
    md_path = out_dir / "latest.md"
    md_path.write_text(markdown_report(parts, machine))
    return json_path, md_path


def _rows_of(part: dict) -> list[Row]:
    return [Row(**{k: r[k] for k in ("part", "measure", "value", "unit", "target", "met", "note")})
            for r in part["rows"]]


def markdown_report(parts: Sequence[dict], machine: dict) -> str:
    """The combined Markdown: machine, one table of every part, then each part's details."""
    libs = ", ".join(f"{k} {v}" for k, v in machine.get("libraries", {}).items() if v)
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine.get('cores')} cores ({machine.get('cpu', '?')}), {machine.get('memory_gib')} GiB, "
        f"Python {machine.get('python')}, {machine.get('platform')}; {machine.get('wrk') or 'wrk not installed'}.",
        f"Libraries: {libs}.",
        "",
        "| part | run at (UTC) | commit | took | load before (1/5/15 min) | quick | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in parts:
        lines.append(f"| {p['part']} | {p['started_at']} | {p['machine'].get('commit', '?')} | {p['seconds']:.0f} s | "
                     f"{' / '.join(map(str, p['load_before']))} | {'yes' if p['quick'] else 'no'} | `{p['command']}` |")
    rows = [row for p in parts for row in _rows_of(p)]
    lines += ["", format_table(rows, markdown=True), ""]
    for p in parts:
        if p.get("markdown"):
            lines += [p["markdown"].rstrip(), ""]
    return "\n".join(lines)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------------
# Child processes: timed work runs in a fresh interpreter, which prints one result line.
# ---------------------------------------------------------------------------------------------------------
RESULT_MARK = "BENCH_RESULT "


def run_child(task: str, args: dict, timeout: float = 3600) -> dict:
    """Run `python -m recommender.benchmark <task>` with args as JSON; its result, or ConfigError with its stderr."""
    cmd = [sys.executable, "-m", "recommender.benchmark", task, json.dumps(args)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
            result["_stderr"] = done.stderr
            return result
    tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
    raise ConfigError(f"benchmark step {task} failed (exit {done.returncode}):\n{tail}")


def _print_result(result: dict) -> None:
    print(RESULT_MARK + json.dumps(result, default=str), flush=True)


# ---------------------------------------------------------------------------------------------------------
# 1. Training: wall time and peak RSS per stage.
# ---------------------------------------------------------------------------------------------------------
class StageClock:
    """Wall time and peak RSS per named stage; mark(name) closes the segment that ran since the last mark."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self.peak = 0
        reset_peak_rss()
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        """Attribute the time and memory peak since the previous mark to stage name (stages may recur)."""
        now = time.perf_counter()
        peak = peak_rss_bytes()
        stage = self.stages.setdefault(name, {"seconds": 0.0, "peak_rss": 0})
        stage["seconds"] += now - self._last
        stage["peak_rss"] = max(stage["peak_rss"], peak)
        self.peak = max(self.peak, peak)
        reset_peak_rss()
        self._last = time.perf_counter()


# Progress messages of training.train that end a stage. Any other unindented "<name>: ..." message ends a
# stage of that name, so stages a new recipe adds show up on their own.
_STAGE_MESSAGES = (("read and cleaned", "clean"), ("saved version", "write"), ("activated", "write"),
                   ("staged", "write"), ("pruned", "write"), ("done in", "write"))
_STAGE_NAME = re.compile(r"^([a-z][a-z0-9 _-]{0,60}): ")


def stage_of_message(message: str) -> str | None:
    """The stage a training progress message closes, or None when it closes none."""
    if not message or message[0].isspace():
        return None
    for prefix, stage in _STAGE_MESSAGES:
        if message.startswith(prefix):
            return stage
    match = _STAGE_NAME.match(message)
    return match.group(1) if match else None


def profile_training(source: str, storage_dir: str, imports_seconds: float | None = None) -> dict:
    """Train on source into a local storage as `make train` does, timing every stage and its peak RSS.

    read vs clean: the reading of each chunk (pandas) is timed apart from the cleaning that follows it by
    wrapping ingest.read_chunks for the duration of this call.
    """
    from . import ingest
    from .storage import LocalStorage
    from .training import train

    imports_peak = peak_rss_bytes()
    clock = StageClock()
    if imports_seconds is not None:  # the command's start-up (interpreter and imports) is part of its wall time
        clock.stages["imports"] = {"seconds": imports_seconds, "peak_rss": imports_peak}
        clock.peak = imports_peak
    original = ingest.read_chunks

    def timed_chunks(path: Any) -> Iterator[Any]:
        chunks = original(path)
        first = True
        while True:
            clock.mark("read" if first else "clean")  # since the last chunk was handed over: cleaning it
            first = False
            try:
                chunk = next(chunks)
            except StopIteration:
                clock.mark("read")
                return
            clock.mark("read")
            yield chunk

    def progress(message: str) -> None:
        stage = stage_of_message(message)
        if stage:
            clock.mark(stage)

    ingest.read_chunks = timed_chunks
    t = time.perf_counter()
    try:
        result = train(source, LocalStorage(storage_dir), progress=progress)
    finally:
        ingest.read_chunks = original
    seconds = time.perf_counter() - t
    clock.mark("write")
    manifest = result.manifest
    folder = Path(storage_dir) / "models" / "versions" / result.version
    sizes = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    total = seconds + (imports_seconds or 0.0)
    return {"source": source, "version": result.version, "seconds": total, "train_seconds": seconds,
            "peak_rss": clock.peak, "stages": clock.stages, "counts": manifest.get("counts", {}), "artifact_bytes": sizes}


def _child_train(args: dict) -> None:
    from . import training  # noqa: F401  (imported here so that its cost lands in the "imports" stage)

    # time.monotonic is CLOCK_MONOTONIC, one clock for every process: the parent's spawn time is comparable.
    _print_result(profile_training(args["source"], args["storage"], time.monotonic() - args["spawned"]))


def measure_training(source: Path, repeats: int, keep: Path | None = None) -> dict:
    """Train `repeats` times, each in a fresh process; medians of time and peak RSS per stage and in total.

    keep: a folder to leave the last run's storage in (the scale part queries that model); else it is removed.
    """
    runs = []
    for r in range(repeats):
        storage = Path(tempfile.mkdtemp(prefix="recommender-bench-train-")) if keep is None or r < repeats - 1 \
            else keep
        try:
            run = run_child("child-train", {"source": str(source), "storage": str(storage),
                                            "spawned": time.monotonic()})
            run.pop("_stderr", None)
            runs.append(run)
            _say(f"  {run['seconds']:.1f} s, peak RSS {run['peak_rss'] / 2**20:,.0f} MiB; {_slowest(run['stages'])}")
        finally:
            if storage != keep:
                shutil.rmtree(storage, ignore_errors=True)
    names: list[str] = []  # in the order the stages ran
    for run in runs:
        names += [s for s in run["stages"] if s not in names]
    stages = {}
    for name in names:
        seconds = [run["stages"].get(name, {}).get("seconds", 0.0) for run in runs]
        peaks = [run["stages"].get(name, {}).get("peak_rss", 0) for run in runs]
        stages[name] = {"seconds": median(seconds), "peak_rss": median(peaks)}
    last = runs[-1]
    return {"source": str(source), "bytes": source.stat().st_size, "repeats": repeats,
            "seconds": median([run["seconds"] for run in runs]), "all_seconds": [run["seconds"] for run in runs],
            "peak_rss": median([run["peak_rss"] for run in runs]), "stages": stages, "counts": last["counts"],
            "artifact_bytes": last["artifact_bytes"], "version": last["version"]}


def _slowest(stages: dict) -> str:
    if not stages:
        return ""
    name, stage = max(stages.items(), key=lambda kv: kv[1]["seconds"])
    return f"slowest stage: {name} {stage['seconds']:.1f} s"


def stage_table(runs: dict[str, dict]) -> str:
    """Markdown: one row per stage, time and peak RSS for each measured file."""
    names: list[str] = []
    for run in runs.values():
        names += [s for s in run["stages"] if s not in names]
    header = "| stage | " + " | ".join(f"{label} s | {label} peak RSS MiB" for label in runs) + " |"
    lines = [header, "|---|" + "---|---|" * len(runs)]
    for name in names + ["total"]:
        cells = []
        for run in runs.values():
            stage = run["stages"].get(name) if name != "total" else {"seconds": run["seconds"], "peak_rss": run["peak_rss"]}
            cells += [f"{stage['seconds']:.2f}", f"{stage['peak_rss'] / 2**20:,.0f}"] if stage else ["", ""]
        lines.append(f"| {'**total**' if name == 'total' else name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bench_train(options: Options) -> PartResult:
    """Part 1: training on the Online Retail csv.gz and xlsx."""
    runs = {}
    rows = []
    for label, path, key in (("csv", options.csv, "train_csv_seconds"), ("xlsx", options.xlsx, "train_xlsx_seconds")):
        if not path.exists():
            raise ConfigError(f"dataset not found: {path} (set --csv/--xlsx)")
        _say(f"training on {path.name}, {options.train_repeats} run(s), each in a fresh process")
        run = measure_training(path, options.train_repeats)
        runs[label] = run
        rows.append(target_row("train", f"{label}: total wall time (median of {run['repeats']})", key,
                               run["seconds"], "s", _slowest(run["stages"])))
        rows.append(Row("train", f"{label}: peak RSS", round(run["peak_rss"] / 2**20), "MiB"))
    md = ["## Training", "",
          f"Per stage, median of {options.train_repeats} fresh-process run(s) each; `imports` is the command's own "
          "start-up (pandas, scipy, ...), `write` includes checksums and publishing. Peak RSS is the process's "
          "peak within the stage.", "", stage_table(runs)]
    return PartResult("train", rows, {"runs": runs}, "", 0, [], [], options.quick, "\n".join(md))


# ---------------------------------------------------------------------------------------------------------
# 2. Serving over real HTTP: the product as `make run-prod` runs it against the bare ceiling app.
# ---------------------------------------------------------------------------------------------------------
WRK_SCRIPT = r"""-- POST /send_data for wrk (written by recommender.benchmark): request bodies from the file named after
-- "--", one JSON object a line, used in turn; the token from BENCH_TOKEN. Counts every non-2xx answer.
local prepared = {}
local turn = 0
non2xx = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local headers = {["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
                   ["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    table.insert(prepared, wrk.format("POST", "/send_data", headers, line))
  end
end

function request()
  turn = turn % #prepared + 1
  return prepared[turn]
end

function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + (thread:get("non2xx") or 0) end
  local e = summary.errors
  io.write(string.format('BENCH_WRK {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "non2xx": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "mean_us": %.1f}\n', summary.requests, summary.duration, summary.bytes, e.connect, e.read,
    e.write, e.status, e.timeout, bad, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_baskets(tx: Any, count: int, seed: int = 0, max_items: int = 10) -> list[list[str]]:
    """Baskets a shopper could hold: a random part (1..max_items products) of randomly chosen real invoices."""
    order = np.argsort(tx.pair_basket, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(tx.pair_basket, minlength=len(tx.basket_ids)))])
    rng = np.random.default_rng(seed)
    baskets = []
    for b in rng.integers(0, len(tx.basket_ids), count):
        items = tx.pair_item[order[bounds[b]:bounds[b + 1]]]
        size = int(rng.integers(1, min(len(items), max_items) + 1))
        baskets.append([tx.item_codes[i] for i in rng.choice(items, size, replace=False)])
    return baskets


def recommend_latency(model: Any, baskets: Sequence[Sequence[str]], n: int = 10, repeats: int = 3,
                      warmup: int = 200) -> dict:
    """In-process Model.recommend latency in microseconds: median over repeats of each pass's p50 and p99.

    The first pass's p99 is kept too: a model may remember per-item work (Annoy neighbours) within a process,
    so later passes show a warm server and the first one a fresh process.
    """
    for basket in baskets[:warmup]:
        model.recommend(basket, n)
    p50, p99, mean = [], [], []
    for _ in range(repeats):
        times = []
        for basket in baskets:
            t = time.perf_counter_ns()
            model.recommend(basket, n)
            times.append(time.perf_counter_ns() - t)
        micros = np.asarray(times) / 1000
        p50.append(percentile(micros, 50))
        p99.append(percentile(micros, 99))
        mean.append(float(micros.mean()))
    return {"p50_us": median(p50), "p99_us": median(p99), "first_pass_p99_us": p99[0], "mean_us": median(mean),
            "calls": len(baskets),
            "repeats": repeats, "n": n, "mean_basket": float(np.mean([len(b) for b in baskets]))}


@dataclass
class Deployment:
    """A storage with the Online Retail model and a benchmark user, settings pointing at it, and a token."""

    folder: Path
    settings: Any
    token: str
    baskets: list[list[str]]
    version: str


@contextmanager
def retail_deployment(csv: Path, workdir: Path, basket_count: int = 2000) -> Iterator[Deployment]:
    """Train the Online Retail model into workdir/store, add user `bench`, and sign a token for it."""
    import secrets as pysecrets

    from .ingest import load_transactions
    from .settings import settings_from_env
    from .storage import LocalStorage
    from .tokens import issue_token, load_secret
    from .training import train
    from .users import add_user

    folder = workdir / "store"
    storage = LocalStorage(folder)
    _say(f"training the Online Retail model for serving ({csv.name})")
    result = train(csv, storage, progress=lambda _m: None)
    add_user(storage, "bench", pysecrets.token_urlsafe(16), "Benchmark", "bench@example.com", rounds=4)
    settings = settings_from_env({**os.environ, "STORAGE_URL": str(folder), "RUN_DIR": str(workdir / "run"),
                                  "HOST": "127.0.0.1", "PORT": str(free_port())})
    secret = load_secret(settings, storage)
    token = issue_token("bench", secret, settings.jwt_algorithm, minutes=240)
    baskets = sample_baskets(load_transactions(csv), basket_count)
    yield Deployment(folder, settings, token, baskets, result.version)


def _post(url: str, token: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _wait_health(host: str, port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    from .server import health

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"the ceiling app exited at start (status {process.returncode})")
        if health(host, port, timeout=1.0) is not None:
            return
        time.sleep(0.2)
    raise ConfigError(f"the ceiling app did not answer on port {port} within {timeout:.0f} s")


@contextmanager
def running_servers(dep: Deployment, template: Path, log_dir: Path) -> Iterator[dict[str, str]]:
    """The product started as `make run-prod` starts it (server.start) and the ceiling app beside it; both stopped after."""
    from .server import start, stop

    ceiling_port = free_port()
    env = {**os.environ, "STORAGE_URL": dep.settings.storage_url, "HOST": "127.0.0.1", "PORT": str(ceiling_port)}
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "ceiling.log", "ab") as log:
        ceiling = subprocess.Popen([sys.executable, "-m", "recommender.ceiling"], env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    product = None
    try:
        _wait_health("127.0.0.1", ceiling_port, ceiling)
        product = start(dep.settings, template)
        yield {"ceiling": f"http://127.0.0.1:{ceiling_port}", "product": f"http://{product.host}:{product.port}"}
    finally:
        if product is not None:
            stop(dep.settings)
        ceiling.terminate()
        try:
            ceiling.wait(15)
        except subprocess.TimeoutExpired:
            ceiling.kill()
            ceiling.wait()


def ensure_wrk() -> str:
    """The path of wrk; ConfigError saying how to install it when missing (make bench-serve installs it)."""
    path = shutil.which("wrk")
    if path is None:
        raise ConfigError("wrk (the HTTP load generator) is not installed: `apt-get install -y wrk`, "
                          "or run `make bench-serve`, which installs it")
    return path


def run_wrk(url: str, script: Path, bodies: Path, token: str, seconds: float, connections: int = 16,
            threads: int = 1) -> dict:
    """One wrk run against url; requests/s, latency percentiles (ms) and errors (socket errors + non-2xx)."""
    cmd = [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
           "-s", str(script), url, "--", str(bodies)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "BENCH_TOKEN": token},
                          timeout=seconds + 120)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_WRK ")), None)
    if line is None:
        raise ConfigError(f"wrk failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")
    raw = json.loads(line[len("BENCH_WRK "):])
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {"rps": raw["requests"] / (raw["duration_us"] / 1e6), "requests": raw["requests"],
            "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
            "max_ms": raw["max_us"] / 1000, "mean_ms": raw["mean_us"] / 1000,
            "errors": socket_errors + raw["non2xx"], "non2xx": raw["non2xx"], "socket_errors": socket_errors,
            "seconds": raw["duration_us"] / 1e6}


async def _asgi_post(app: Any, path: str, body: bytes, token: str) -> int:
    """One POST through an ASGI app in this process (no sockets); the response status."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
             "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode()),
                         (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    delivered = False
    status = 0

    async def receive() -> dict:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def asgi_latency(app: Any, bodies: Sequence[bytes], token: str, warmup: Sequence[bytes] = (), repeats: int = 1) -> dict:
    """Per-request time of an ASGI app called in-process: the app's own cost, without uvicorn and the network.

    The warm-up bodies should differ from the measured ones, so that an answer cache does not serve the latter.
    """
    import asyncio

    async def measure() -> list[list[int]]:
        for body in warmup:
            await _asgi_post(app, "/send_data", body, token)
        passes = []
        for _ in range(repeats):
            times = []
            for body in bodies:
                t = time.perf_counter_ns()
                status = await _asgi_post(app, "/send_data", body, token)
                times.append(time.perf_counter_ns() - t)
                if status != 200:
                    raise ConfigError(f"in-process request answered {status}")
            passes.append(times)
        return passes

    passes = asyncio.run(measure())
    return {"p50_us": median([percentile(np.asarray(t) / 1000, 50) for t in passes]),
            "p99_us": median([percentile(np.asarray(t) / 1000, 99) for t in passes]), "calls": len(bodies)}


def profile_hotspots(app: Any, bodies: Sequence[bytes], token: str, top: int = 15) -> list[dict]:
    """cProfile of in-process requests: the functions with the most own time, per request."""
    import asyncio
    import cProfile
    import pstats

    async def many() -> None:
        for body in bodies:
            await _asgi_post(app, "/send_data", body, token)

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(many())
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, ncalls, tottime, cumtime, callers)}
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    return [{"function": f"{Path(file).parent.name}/{Path(file).name}:{line}({name})" if file != "~" else name,
             "own_us_per_request": tottime / len(bodies) * 1e6, "calls_per_request": ncalls / len(bodies)}
            for (file, line, name), (_cc, ncalls, tottime, _cum, _callers) in rows]


@contextmanager
def product_app_in_process(dep: Deployment, template: Path) -> Iterator[Any]:
    """The gateway app `make run` serves, built in this process over the deployment's storage."""
    from . import web
    from .gateway import Gateway, read_routes
    from .settings import get_settings

    saved = os.environ.get("STORAGE_URL")
    os.environ["STORAGE_URL"] = dep.settings.storage_url
    get_settings.cache_clear()
    web.reset_resources()
    holder = web.model_holder(get_settings())
    holder.warm = True  # as `make run` serves it: Annoy's answers primed before the first request
    holder.refresh()
    try:
        yield Gateway(read_routes(template), template.resolve().parent)
    finally:
        if saved is None:
            os.environ.pop("STORAGE_URL", None)
        else:
            os.environ["STORAGE_URL"] = saved
        get_settings.cache_clear()
        web.reset_resources()


def bench_serve(options: Options, dep: Deployment) -> PartResult:
    """Part 2: /send_data over loopback, product vs ceiling alternated, plus Model.recommend in-process."""
    from .ceiling import create_app as create_ceiling
    from .model import load_model
    from .storage import LocalStorage, open_storage
    from .tokens import load_secret

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
        repeated.write_text("".join(bodies.read_text().splitlines(keepends=True)[:options.cached_baskets]))
        runs: list[dict] = []
        with running_servers(dep, options.template, work / "logs") as urls:
            for name, url in urls.items():  # each answers correctly before it is measured
                status, body = _post(url + "/send_data", dep.token, bodies.read_text().splitlines()[0].encode())
                if status != 200 or len(json.loads(body)["result"]["recommendation"]) != 10:
                    raise ConfigError(f"{name} answered {status} {body[:200]!r} before the load test")
                _say(f"warming up {name} ({options.warmup_seconds:g} s)")
                run_wrk(url + "/send_data", script, bodies, dep.token, options.warmup_seconds, options.connections)
            for round_ in range(options.serve_rounds):
                for name in ("ceiling", "product"):
                    _say(f"round {round_ + 1}: {name}, {options.serve_seconds:g} s at concurrency {options.connections}")
                    run = run_wrk(urls[name] + "/send_data", script, bodies, dep.token, options.serve_seconds,
                                  options.connections)
                    runs.append({"app": name, "round": round_ + 1, **run})
                    _say(f"  {run['rps']:,.0f} requests/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, "
                         f"{run['errors']} errors")
            _say(f"product with {options.cached_baskets:,} baskets cycled (ANSWER_CACHE="
                 f"{dep.settings.answer_cache}), {options.serve_seconds:g} s")
            run = run_wrk(urls["product"] + "/send_data", script, repeated, dep.token, options.serve_seconds,
                          options.connections)
            runs.append({"app": "product, repeated baskets", "round": 1, **run})
            _say(f"  {run['rps']:,.0f} requests/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def pick(app: str, key: str) -> list[float]:
        return [r[key] for r in runs if r["app"] == app]

    summary = {app: {"rps": median(pick(app, "rps")), "p50_ms": median(pick(app, "p50_ms")),
                     "p99_ms": median(pick(app, "p99_ms")), "errors": int(sum(pick(app, "errors")))}
               for app in ("ceiling", "product")}
    ratios = [p["rps"] / c["rps"] for c, p in zip([r for r in runs if r["app"] == "ceiling"],
                                                   [r for r in runs if r["app"] == "product"])]
    ratio = median(ratios)
    distinct = len({tuple(sorted(b)) for b in dep.baskets}) / len(dep.baskets)
    model = load_model(LocalStorage(dep.folder), dep.version)  # no answer cache: every call computes
    measured = dep.baskets[:options.baskets]
    _say(f"in-process Model.recommend over {len(measured):,} baskets")
    inproc = recommend_latency(model, measured, n=10, repeats=options.latency_repeats)
    _say("in-process ASGI calls of both apps (no sockets), and a profile of the product's")
    payloads = [json.dumps({"product_list": b, "n": 10}).encode() for b in dep.baskets]
    measured_bodies, warm_bodies = payloads[:options.baskets], payloads[-200:]
    profiled = payloads[options.baskets:options.baskets + 500]
    ceiling_app = create_ceiling(load_secret(dep.settings, open_storage(dep.settings)), dep.settings.jwt_algorithm)
    asgi = {"ceiling": asgi_latency(ceiling_app, measured_bodies, dep.token, warm_bodies)}
    with product_app_in_process(dep, options.template) as app:
        asgi["product"] = asgi_latency(app, measured_bodies, dep.token, warm_bodies)
        hotspots = profile_hotspots(app, profiled, dep.token)
    prod, ceil = summary["product"], summary["ceiling"]
    cached = next(r for r in runs if r["app"] == "product, repeated baskets")
    rows = [
        Row("serve", "ceiling: requests/s (median)", round(ceil["rps"]), "req/s",
            note=f"p50 {ceil['p50_ms']:.2f} ms, p99 {ceil['p99_ms']:.2f} ms, {ceil['errors']} errors"),
        Row("serve", "product: requests/s (median)", round(prod["rps"]), "req/s",
            note=f"p50 {prod['p50_ms']:.2f} ms"),
        target_row("serve", "product / ceiling requests/s (median of paired runs)", "serve_rps_ratio",
                   round(ratio, 3), "x", "paired runs: " + ", ".join(f"{r:.2f}" for r in ratios)),
        target_row("serve", "product: p99 latency", "serve_p99_ms", round(prod["p99_ms"], 2), "ms",
                   f"ceiling p99 {ceil['p99_ms']:.2f} ms"),
        target_row("serve", "product: errors (socket + non-2xx)", "serve_errors", prod["errors"], "",
                   f"of {sum(pick('product', 'requests')):,} requests"),
        Row("serve", "in-process Model.recommend p50", round(inproc["p50_us"], 1), "µs",
            note=f"n=10, {inproc['calls']:,} baskets of {inproc['mean_basket']:.1f} items on average, no cache"),
        Row("serve", "in-process Model.recommend p99", round(inproc["p99_us"], 1), "µs"),
        Row("serve", "product, repeated baskets: requests/s", round(cached["rps"]), "req/s",
            note=f"{options.cached_baskets:,} baskets cycled, ANSWER_CACHE={dep.settings.answer_cache}; "
                 f"p99 {cached['p99_ms']:.2f} ms"),
        Row("serve", "in-process product app (ASGI, no sockets) p50", round(asgi["product"]["p50_us"], 1), "µs",
            note=f"p99 {asgi['product']['p99_us']:,.0f} µs; ceiling app p50 {asgi['ceiling']['p50_us']:,.0f} µs, "
                 f"p99 {asgi['ceiling']['p99_us']:,.0f} µs"),
    ]
    md = ["## Serving", "",
          f"`POST /send_data` over loopback with wrk ({options.connections} connections, 1 thread, "
          f"{options.serve_seconds:g} s a run, alternated ceiling/product {options.serve_rounds}x after a "
          f"{options.warmup_seconds:g} s warm-up each), bodies taken in turn from {len(dep.baskets):,} baskets sampled "
          f"from Online Retail invoices ({distinct:.0%} distinct; a basket is 1-10 products of one invoice), n=10, "
          "so the product's answer cache (ANSWER_CACHE) serves only the repeats such sampling gives; one more "
          f"product run cycles {options.cached_baskets:,} baskets to show the cache's effect. Product: `server.start` (what `make run-prod` runs). Ceiling: "
          "`recommender.ceiling`, bare FastAPI checking the same token, constant 10-item answer, same uvicorn options.",
          "", "| run | app | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['round']} | {r['app']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | "
           f"{r['max_ms']:.1f} | {r['errors']} |" for r in runs]
    md += ["", f"Where a request's time goes, in-process (median µs per request): ceiling app "
           f"{asgi['ceiling']['p50_us']:,.0f}, product app {asgi['product']['p50_us']:,.0f}, of which "
           f"Model.recommend {inproc['p50_us']:,.0f}; the rest of the HTTP time is uvicorn, the sockets and wrk "
           "sharing the two cores. Own time per request of the product's hottest functions (cProfile, "
           f"{min(500, len(payloads))} requests; profiling inflates small functions):", "",
           "| function | own µs per request | calls per request |", "|---|---|---|"]
    md += [f"| `{h['function']}` | {h['own_us_per_request']:,.0f} | {h['calls_per_request']:g} |" for h in hotspots]
    from .server import uvicorn_options

    details = {"runs": runs, "summary": summary, "ratio": ratio, "paired_ratios": ratios, "in_process": inproc,
               "pool_baskets": len(dep.baskets), "pool_distinct": distinct,
               "asgi": asgi, "hotspots": hotspots,
               "uvicorn": {k: v for k, v in uvicorn_options(dep.settings).items() if k not in ("host", "port")},
               "connections": options.connections, "seconds": options.serve_seconds, "model_version": dep.version}
    return PartResult("serve", rows, details, "", 0, [], [], options.quick, "\n".join(md))


# ---------------------------------------------------------------------------------------------------------
# 3. Cold start of the recommend Lambda handler.
# ---------------------------------------------------------------------------------------------------------
COLD_START = r"""
import json, sys, time
started = time.monotonic()
sys.path.insert(0, sys.argv[1])  # the function's CodeUri, as the Lambda runtime puts it on sys.path
import app  # functions/recommend/app.py: Handler app.handler
imported = time.monotonic()
from recommender import web
from recommender.settings import get_settings
web.model_holder(get_settings()).refresh()  # what the first request would do: load and verify the model
loaded = time.monotonic()
from types import SimpleNamespace
context = SimpleNamespace(function_name="recommend", aws_request_id="bench", get_remaining_time_in_millis=lambda: 30000)
response = app.handler(json.loads(sys.argv[2]), context)
answered = time.monotonic()
print("BENCH_RESULT " + json.dumps({"started": started, "imported": imported, "loaded": loaded, "answered": answered,
                                    "status": response["statusCode"], "body": response["body"][:300]}))
"""


def send_data_event(template_dir: Path, token: str, basket: Sequence[str], n: int = 10) -> dict:
    """An API Gateway HTTP API (payload 2.0) event for POST /send_data, shaped as tests/events/send_data.json."""
    sample = template_dir / "tests" / "events" / "send_data.json"
    if sample.exists():
        event = json.loads(sample.read_text())
    else:  # an installed package without the repository's tests: the same shape, minimal
        event = {"version": "2.0", "routeKey": "POST /send_data", "rawPath": "/send_data", "rawQueryString": "",
                 "headers": {"content-type": "application/json"}, "isBase64Encoded": False,
                 "requestContext": {"http": {"method": "POST", "path": "/send_data", "protocol": "HTTP/1.1",
                                             "sourceIp": "127.0.0.1", "userAgent": "bench"},
                                    "requestId": "bench", "routeKey": "POST /send_data", "stage": "$default"}}
    event["headers"]["authorization"] = f"Bearer {token}"
    event["body"] = json.dumps({"product_list": list(basket), "n": n})
    return event


def parse_importtime(stderr: str, top: int = 12) -> dict:
    """The slowest imports from `python -X importtime`: per top-level package (self times of all its modules
    summed, so that fastapi is charged for fastapi and pydantic for pydantic), and single modules by self time."""
    entries = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        try:
            parts = line.split("|")
            self_us = int(parts[0].split(":")[1])
            cumulative_us = int(parts[1])
            raw = parts[2]
        except (ValueError, IndexError):
            continue
        depth = (len(raw) - len(raw.lstrip(" ")) - 1) // 2
        entries.append({"module": raw.strip(), "self_ms": self_us / 1000, "cumulative_ms": cumulative_us / 1000,
                        "depth": depth})
    packages: dict[str, dict] = {}
    for e in entries:
        name = e["module"].split(".")[0]
        package = packages.setdefault(name, {"package": name, "self_ms": 0.0, "modules": 0})
        package["self_ms"] += e["self_ms"]
        package["modules"] += 1
    by_package = sorted(packages.values(), key=lambda p: -p["self_ms"])[:top]
    by_self = sorted(entries, key=lambda e: -e["self_ms"])[:top]
    return {"by_package": by_package, "by_self": by_self, "modules": len(entries),
            "total_ms": sum(e["cumulative_ms"] for e in entries if e["depth"] == 0)}


def bench_cold(options: Options, dep: Deployment) -> PartResult:
    """Part 3: a fresh process imports the recommend handler, loads the model and answers one event via Mangum."""
    root = options.template.resolve().parent
    code_dir = root / "functions" / "recommend"
    event = json.dumps(send_data_event(root, dep.token, dep.baskets[0]))
    env = {**os.environ, "STORAGE_URL": str(dep.folder)}
    runs = []
    for i in range(options.cold_repeats):
        spawned = time.monotonic()
        done = subprocess.run([sys.executable, "-c", COLD_START, str(code_dir), event], capture_output=True,
                              text=True, env=env, timeout=120)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARK)), None)
        if line is None:
            raise ConfigError(f"the cold-start process failed: {done.stderr.strip()[-800:]}")
        r = json.loads(line[len(RESULT_MARK):])
        if r["status"] != 200:
            raise ConfigError(f"the cold-start event was answered {r['status']}: {r['body']}")
        runs.append({"interpreter": r["started"] - spawned, "import": r["imported"] - r["started"],
                     "model_load": r["loaded"] - r["imported"], "first_event": r["answered"] - r["loaded"],
                     "total": r["answered"] - spawned})
    importtime = subprocess.run([sys.executable, "-X", "importtime", "-c", COLD_START, str(code_dir), event],
                                capture_output=True, text=True, env=env, timeout=120)
    imports = parse_importtime(importtime.stderr)
    stat = {k: median([r[k] for r in runs]) for k in runs[0]}
    slowest = ", ".join(f"{p['package']} {p['self_ms']:.0f} ms" for p in imports["by_package"][:4])
    rows = [
        target_row("cold", f"cold start, spawn to first answer (median of {len(runs)})", "cold_start_seconds",
                   round(stat["total"], 3), "s", f"slowest imports: {slowest}"),
        Row("cold", "  interpreter start", round(stat["interpreter"] * 1000), "ms"),
        Row("cold", "  import handler module", round(stat["import"] * 1000), "ms"),
        Row("cold", "  model load (verify + map)", round(stat["model_load"] * 1000), "ms"),
        Row("cold", "  first event through Mangum", round(stat["first_event"] * 1000), "ms"),
    ]
    md = ["## Cold start", "",
          "A fresh `python` puts `functions/recommend` on sys.path and imports `app` as the Lambda runtime does, "
          "loads the active Online Retail model (checksums verified, arrays memory-mapped) and answers one API "
          "Gateway v2 `POST /send_data` event through Mangum (token check, user lookup, recommendation). Local "
          "storage: on AWS the model would first be copied from S3 to /tmp, and the secret read from Secrets Manager.",
          "", f"Slowest imports (`python -X importtime`, one extra run; {imports['modules']} modules, "
          f"{imports['total_ms']:.0f} ms in all), per package:", "",
          "| package | ms (self times of its modules) | modules |", "|---|---|---|"]
    md += [f"| {p['package']} | {p['self_ms']:.0f} | {p['modules']} |" for p in imports["by_package"]]
    md += ["", "Slowest single modules (self time):", "", "| module | self ms |", "|---|---|"]
    md += [f"| {e['module']} | {e['self_ms']:.1f} |" for e in imports["by_self"][:8]]
    details = {"runs": runs, "median": stat, "imports": imports, "model_version": dep.version}
    return PartResult("cold", rows, details, "", 0, [], [], options.quick, "\n".join(md))


# ---------------------------------------------------------------------------------------------------------
# 4. Scale: the synthetic generator's "scale" preset (10M rows, 100k products, 1M invoices).
# ---------------------------------------------------------------------------------------------------------
def synthetic_dataset(spec: Any, folder: Path) -> tuple[Path, dict]:
    """The csv.gz for spec in folder, generated once and reused while the spec and the generator are unchanged."""
    import hashlib

    from . import synthetic

    source_hash = hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()
    digest = hashlib.sha256((repr(spec) + source_hash).encode()).hexdigest()[:10]
    stem = f"synthetic-{spec.invoices}inv-{spec.products}prod"
    path = folder / f"{stem}-{digest}.csv.gz"
    meta_path = path.with_name(path.name + ".json")
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{stem}-*.csv.gz*"):
        stale.unlink()
    _say(f"generating {path.name} (once; kept for later runs)")
    t = time.perf_counter()
    summary = synthetic.write_csv(spec, path)
    meta = {"spec": asdict(spec), "rows": summary.rows, "invoices": summary.invoices, "products": summary.products,
            "customers": summary.customers, "generated_seconds": round(time.perf_counter() - t, 1),
            "bytes": path.stat().st_size, "generator_sha256": source_hash}
    meta_path.write_text(json.dumps(meta, indent=1))
    return path, meta


def scale_quality(source: str, model_storage: str | None, days: int, max_cases: int, latency_baskets: int,
                  seed: int = 0) -> dict:
    """HR@10 of the product against popularity on the file's own temporal split (evaluation's protocol and code),
    and Model.recommend latency of the model trained on the whole file (when model_storage holds it)."""
    from . import evaluation
    from .ingest import load_transactions
    from .model import load_model
    from .registry import active_version
    from .storage import LocalStorage
    from .training import TrainingParams

    t = time.perf_counter()
    tx = load_transactions(source)
    out: dict[str, Any] = {"load_seconds": time.perf_counter() - t}
    if model_storage:
        storage = LocalStorage(model_storage)
        model = load_model(storage, active_version(storage))
        baskets = sample_baskets(tx, latency_baskets, seed)
        out["latency"] = recommend_latency(model, baskets, n=10, repeats=3)
        out["latency"]["items"] = len(model.catalog)
        del model
    split = evaluation.temporal_split(tx, days, seed)
    del tx
    out["cases_available"] = len(split.cases)
    if len(split.cases) > max_cases:
        pick = np.sort(np.random.default_rng(seed).choice(len(split.cases), max_cases, replace=False))
        split = replace(split, cases=evaluation.Cases([split.cases.queries[i] for i in pick], split.cases.hidden[pick]))
    n_items = len(split.train.item_codes)
    t = time.perf_counter()
    ranked, stats = evaluation.product(split, TrainingParams(), progress=lambda _m: None)
    product = evaluation.score("product", ranked, split.cases, n_items)
    popular = evaluation.score("popularity", evaluation.popularity(split), split.cases, n_items)
    out.update({"cases": len(split.cases), "cutoff": str(split.cutoff), "train_baskets": split.train.report.baskets,
                "train_items": n_items, "hr_product": product.hr, "hr_popularity": popular.hr,
                "mrr_product": product.mrr, "coverage_product": product.coverage, "split_model": stats,
                "eval_seconds": time.perf_counter() - t})
    return out


def _child_quality(args: dict) -> None:
    _print_result(scale_quality(**args))


@dataclass(frozen=True)
class ScalePlan:
    """The full-size spec and the smaller ones the growth estimate is fitted on."""

    invoices: int
    products: int
    customers: int
    row_fractions: tuple[float, ...] = (0.1, 0.3)      # with all products
    product_fractions: tuple[float, ...] = (0.1, 0.3)  # at row_fractions[-1] of the rows
    days: int = 30
    max_cases: int = 20_000
    latency_baskets: int = 2_000


def bench_scale(options: Options) -> PartResult:
    """Part 4: train on 10M rows / 100k products; size, query latency, HR@10 vs popularity, growth with size."""
    from . import synthetic

    plan = options.scale
    full = synthetic.preset("scale", invoices=plan.invoices, products=plan.products, customers=plan.customers)
    sweep_rows = plan.row_fractions[-1] if plan.row_fractions else 1.0
    specs = {("rows", 1.0, 1.0): full}
    for f in plan.row_fractions:
        specs[("rows", f, 1.0)] = replace(full, invoices=max(1000, round(full.invoices * f)))
    for f in plan.product_fractions:
        specs[("products", sweep_rows, f)] = replace(full, invoices=max(1000, round(full.invoices * sweep_rows)),
                                                     products=max(100, round(full.products * f)))
    datasets = {key: synthetic_dataset(spec, options.cache_dir) for key, spec in specs.items()}

    path, meta = datasets[("rows", 1.0, 1.0)]
    keep = options.cache_dir / "scale-model"
    shutil.rmtree(keep, ignore_errors=True)
    _say(f"training on {path.name}: {meta['rows']:,} rows, {meta['products']:,} products")
    try:
        main = measure_training(path, 1, keep=keep)
        _say("query latency on the full model; HR@10 on the temporal split (trains a second model)")
        quality = run_child("child-quality", {"source": str(path), "model_storage": str(keep), "days": plan.days,
                                              "max_cases": plan.max_cases, "latency_baskets": plan.latency_baskets})
        quality.pop("_stderr", None)
    finally:
        shutil.rmtree(keep, ignore_errors=True)

    growth_runs = []
    for key, (gpath, gmeta) in datasets.items():
        if key == ("rows", 1.0, 1.0):
            run = main
        else:
            _say(f"growth: training on {gpath.name} ({gmeta['rows']:,} rows)")
            run = measure_training(gpath, 1)
        growth_runs.append({"sweep": key[0], "rows": gmeta["rows"], "products": gmeta["spec"]["products"],
                            "items": run["counts"].get("items"), "seconds": run["seconds"],
                            "peak_rss": run["peak_rss"], "baseline_rss": run["stages"].get("imports", {}).get("peak_rss", 0),
                            "stages": {k: v["seconds"] for k, v in run["stages"].items()}})
    details = {"dataset": meta, "train": main, "quality": quality, "growth_runs": growth_runs,
               "growth": growth_estimate(growth_runs, sweep_rows), "plan": asdict(plan),
               "cache_dir": str(options.cache_dir)}
    rows, md = scale_report(details)
    return PartResult("scale", rows, details, "", 0, [], [], options.quick, md)


def scale_report(details: dict) -> tuple[list[Row], str]:
    """The scale part's table rows and Markdown, from its measured details (so saved results can be re-rendered)."""
    meta, main, quality, growth_runs = details["dataset"], details["train"], details["quality"], details["growth_runs"]
    plan, growth = ScalePlan(**details["plan"]), details["growth"]
    index_bytes = main["artifact_bytes"].get("index.ann", 0)
    latency = quality.get("latency", {})
    hr_p, hr_pop = quality["hr_product"], quality["hr_popularity"]
    lift = hr_p / hr_pop if hr_pop else float("inf")
    worst = max(main["stages"].items(), key=lambda kv: kv[1]["peak_rss"])
    rows = [
        Row("scale", "dataset", meta["rows"], "rows",
            note=f"{meta['invoices']:,} invoices, {meta['products']:,} products, {meta['bytes'] / 1e6:.0f} MB csv.gz"),
        target_row("scale", "train: total wall time", "scale_train_seconds", round(main["seconds"], 1), "s",
                   _slowest(main["stages"])),
        target_row("scale", "train: peak RSS", "scale_peak_rss_gib", round(main["peak_rss"] / GiB, 2), "GiB",
                   f"in stage {worst[0]}"),
        Row("scale", "index size on disk (index.ann)", round(index_bytes / 2**20, 1), "MiB",
            note=f"all artifacts {sum(main['artifact_bytes'].values()) / 2**20:,.0f} MiB"),
        Row("scale", "query p50 (in-process)", round(latency.get("p50_us", float("nan")), 1), "µs",
            note=f"{latency.get('items', 0):,} items, n=10"),
        target_row("scale", "query p99 (in-process)", "scale_query_p99_ms",
                   round(latency.get("p99_us", float("nan")) / 1000, 3), "ms",
                   f"first pass over the baskets: p99 {latency.get('first_pass_p99_us', float('nan')) / 1000:.2f} ms"
                   if "first_pass_p99_us" in latency else ""),
        Row("scale", "HR@10 product", round(hr_p, 4), "", note=f"{quality['cases']:,} test baskets, last {plan.days} days"),
        Row("scale", "HR@10 popularity", round(hr_pop, 4), ""),
        target_row("scale", "HR@10 lift over popularity", "scale_hr_lift", round(lift, 2), "x"),
        Row("scale", "time growth with rows (exponent)", round(growth["time_rows"], 2), "",
            note=f"{growth['time_rows_top']:.2f} between the two largest; 10x rows: "
                 f"~{growth['time_10x_rows'] / 60:,.0f} min"),
        Row("scale", "memory growth with rows (exponent)", round(growth["memory_rows"], 2), "",
            note=f"{growth['memory_rows_top']:.2f} between the two largest; 10x rows: "
                 f"~{growth['memory_10x_rows'] / GiB:,.1f} GiB"),
        Row("scale", "time growth with products (exponent)", round(growth["time_products"], 2), ""),
        Row("scale", "memory growth with products (exponent)", round(growth["memory_products"], 2), ""),
    ]
    md = ["## Scale", "",
          f"Synthetic data from `recommender.synthetic` (preset `scale`"
          f"{'' if (plan.invoices, plan.products) == (1_000_000, 100_000) else f', resized to {plan.invoices:,} invoices / {plan.products:,} products'}), "
          f"cached under `{details.get('cache_dir', 'data/bench')}`. One training run per size in a fresh process. HR@10: "
          f"`recommender.evaluation`'s protocol (last {plan.days} days held out, one known item hidden per basket, "
          f"seeded), {quality['cases']:,} of {quality['cases_available']:,} cases sampled, asked through "
          "Model.recommend of a model trained on the earlier days.", "",
          stage_table({"full": main}), "",
          "Growth (one run per size; memory exponents fitted on peak RSS above the interpreter's baseline):", "",
          "| sweep | rows | products | items | train s | peak RSS MiB | slowest stage |", "|---|---|---|---|---|---|---|"]
    for g in growth_runs:
        stage, secs = max(g["stages"].items(), key=lambda kv: kv[1])
        md.append(f"| {g['sweep']} | {g['rows']:,} | {g['products']:,} | {g['items']:,} | {g['seconds']:.1f} | "
                  f"{g['peak_rss'] / 2**20:,.0f} | {stage} {secs:.1f} s |")
    md += ["", f"Fitted over all sizes: time ~ rows^{growth['time_rows']:.2f}, memory ~ rows^{growth['memory_rows']:.2f} "
           f"(products fixed; between the two largest: ^{growth['time_rows_top']:.2f} and "
           f"^{growth['memory_rows_top']:.2f}); time ~ products^{growth['time_products']:.2f}, memory ~ products^"
           f"{growth['memory_products']:.2f} (rows fixed). Extrapolated to 10x the rows with the exponents between "
           f"the two largest: ~{growth['time_10x_rows'] / 60:,.0f} min, ~{growth['memory_10x_rows'] / GiB:,.1f} GiB."]
    return rows, "\n".join(md)


def growth_estimate(runs: Sequence[dict], sweep_rows: float) -> dict:
    """Exponents of training time and memory (above baseline) in rows (all products) and in products (fixed rows),
    fitted over every size and between the two largest row counts; the full-size run extrapolated to 10x the rows
    with the latter, since fixed costs weigh less the larger the data (the all-sizes fit would under-estimate)."""
    by_rows = sorted((r for r in runs if r["sweep"] == "rows"), key=lambda r: r["rows"])
    full = by_rows[-1]
    sweep_size = min(by_rows, key=lambda r: abs(r["rows"] / full["rows"] - sweep_rows))
    by_products = sorted([r for r in runs if r["sweep"] == "products"] + [sweep_size], key=lambda r: r["products"])

    def above(r: dict) -> float:
        return max(r["peak_rss"] - r["baseline_rss"], 1)

    est = {
        "time_rows": growth_exponent([r["rows"] for r in by_rows], [r["seconds"] for r in by_rows]),
        "memory_rows": growth_exponent([r["rows"] for r in by_rows], [above(r) for r in by_rows]),
        "time_products": growth_exponent([r["products"] for r in by_products], [r["seconds"] for r in by_products]),
        "memory_products": growth_exponent([r["products"] for r in by_products], [above(r) for r in by_products]),
    }
    top = by_rows[-2:]
    est["time_rows_top"] = growth_exponent([r["rows"] for r in top], [r["seconds"] for r in top])
    est["memory_rows_top"] = growth_exponent([r["rows"] for r in top], [above(r) for r in top])
    time_exp = est["time_rows_top"] if est["time_rows_top"] == est["time_rows_top"] else est["time_rows"]
    memory_exp = est["memory_rows_top"] if est["memory_rows_top"] == est["memory_rows_top"] else est["memory_rows"]
    est["time_10x_rows"] = full["seconds"] * 10 ** time_exp
    est["memory_10x_rows"] = full["baseline_rss"] + above(full) * 10 ** memory_exp
    return est


# ---------------------------------------------------------------------------------------------------------
# Running the parts.
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Options:
    """How much to measure; quick_options() gives the short smoke-test variant."""

    csv: Path = Path("../shared/datasets/online_retail.csv.gz")
    xlsx: Path = Path("../shared/datasets/online_retail.xlsx")
    template: Path = Path("template.yaml")
    out_dir: Path = Path("bench/results")
    cache_dir: Path = Path("data/bench")
    train_repeats: int = 3
    serve_seconds: float = 20.0
    serve_rounds: int = 2
    warmup_seconds: float = 3.0
    connections: int = 16
    latency_repeats: int = 3
    cold_repeats: int = 5
    baskets: int = 2000          # baskets timed in-process (Model.recommend, ASGI)
    http_baskets: int = 200_000  # request bodies of the HTTP runs: more than a run sends, so none repeats by design
    cached_baskets: int = 2000   # the extra product run cycling few baskets (answer cache hits)
    scale: ScalePlan = field(default_factory=lambda: ScalePlan(1_000_000, 100_000, 80_000))
    quick: bool = False

    @classmethod
    def quick_options(cls, **changes: Any) -> "Options":
        """Short runs to check the harness end to end: one training each, 3 s HTTP runs, a 200k-row scale set."""
        base = cls(train_repeats=1, serve_seconds=3.0, serve_rounds=2, warmup_seconds=1.0, latency_repeats=1,
                   cold_repeats=2, baskets=500, http_baskets=20_000, cached_baskets=500, scale=ScalePlan(20_000, 5_000, 4_000, max_cases=2_000, latency_baskets=500),
                   out_dir=Path("bench/results/quick"), quick=True)
        return replace(base, **changes)


def run(parts: Sequence[str], options: Options, command: str = "") -> tuple[list[PartResult], Path, Path]:
    """Run the named parts in order, print one table, and write the results; returns them and the files written."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"unknown benchmark part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)} or all")
    machine = machine_info()
    load = load_average()
    if load and load[0] >= 0.5:
        _say(f"the machine is busy (load {load[0]} on {machine.get('cores')} cores): absolute figures will be noisy; "
             "ratios are measured in the same run")
    results: list[PartResult] = []
    with tempfile.TemporaryDirectory(prefix="recommender-bench-") as tmp, ExitStack() as stack:
        deployment = None
        for part in parts:
            before, started_at, t = load_average(), _now(), time.perf_counter()
            _say(f"part {part} (load {' / '.join(map(str, before))})")
            if part in ("serve", "cold") and deployment is None:  # one trained model serves both parts
                deployment = stack.enter_context(retail_deployment(options.csv, Path(tmp), options.http_baskets))
            if part == "train":
                result = bench_train(options)
            elif part == "serve":
                result = bench_serve(options, deployment)
            elif part == "cold":
                result = bench_cold(options, deployment)
            else:
                result = bench_scale(options)
            result.started_at, result.seconds = started_at, time.perf_counter() - t
            result.load_before, result.load_after = before, load_average()
            results.append(result)
    json_path, md_path = write_results(results, options.out_dir, machine, command)
    print(format_table([row for r in results for row in r.rows]))
    print(f"\nmachine: {machine.get('cores')} cores, {machine.get('memory_gib')} GiB, Python {machine.get('python')}; "
          f"load before each part: " + ", ".join(f"{r.part} {r.load_before[0] if r.load_before else '?'}" for r in results))
    print(f"results: {md_path} and {json_path}")
    return results, json_path, md_path


def _child_main(argv: Sequence[str]) -> int:
    tasks = {"child-train": _child_train, "child-quality": _child_quality}
    tasks[argv[0]](json.loads(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
