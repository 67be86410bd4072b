"""Running the benchmark parts (`make bench`): the order of the parts, one table at the end."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from bench.analytics import bench_report
from bench.cold import bench_cold
from bench.common import PARTS, load_average, machine_info, say, shown
from bench.deployment import retail_deployment
from bench.events import bench_events
from bench.logins import bench_logins
from bench.merch import bench_merch
from bench.options import Options, check_data
from bench.report import (
    PartResult,
    format_table,
    load_baseline,
    now_iso,
    write_results,
)
from bench.scale import bench_scale
from bench.search import bench_search
from bench.serve import bench_serve
from bench.train import bench_train
from bench.widget import bench_widget
from recommender.core.errors import ConfigError


def run(parts: Sequence[str], options: Options, command: str = "") -> tuple[list[PartResult], Path, Path]:
    """Run the named parts in order, print one table, and write the results; returns them and the files written."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"unknown benchmark part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)} or all")
    check_data(parts, options)
    machine = machine_info()
    load = load_average()
    if load and load[0] >= 0.5:
        say(
            f"the machine is busy (load {load[0]} on {machine.get('cores')} cores): absolute figures will be noisy; "
            "ratios are measured in the same run"
        )
    results: list[PartResult] = []
    with tempfile.TemporaryDirectory(prefix="recommender-bench-") as tmp, ExitStack() as stack:
        deployment = None
        for part in parts:
            before, started_at, t = load_average(), now_iso(), time.perf_counter()
            say(f"part {part} (load {' / '.join(map(str, before))})")
            if part in ("serve", "cold", "merch", "logins") and deployment is None:  # one trained model serves them
                deployment = stack.enter_context(retail_deployment(options.csv, Path(tmp), options.http_baskets))
            if part == "train":
                result = bench_train(options)
            elif part == "serve":
                result = bench_serve(options, deployment)
            elif part == "cold":
                result = bench_cold(options, deployment)
            elif part == "merch":
                result = bench_merch(options, deployment)
            elif part == "logins":
                result = bench_logins(options, deployment)
            elif part == "search":
                result = bench_search(options)
            elif part == "widget":
                result = bench_widget(options)
            elif part == "events":
                result = bench_events(options)
            elif part == "report":
                result = bench_report(options)
            else:
                result = bench_scale(options)
            result.started_at, result.seconds = started_at, time.perf_counter() - t
            result.load_before, result.load_after = before, load_average()
            results.append(result)
    json_path, md_path = write_results(results, options.out_dir, machine, command)
    print(format_table([row for r in results for row in r.rows], before=load_baseline(options.out_dir)))
    print(
        f"\nmachine: {machine.get('cores')} cores, {machine.get('memory_gib')} GiB, Python {machine.get('python')}; "
        "load before each part: " + ", ".join(f"{r.part} {r.load_before[0] if r.load_before else '?'}" for r in results)
    )
    print(f"results: {shown(md_path)} and {shown(json_path)}")
    return results, json_path, md_path
