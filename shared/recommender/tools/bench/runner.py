"""Running the benchmark parts (`make bench`): options, the order of the parts, one table at the end."""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from recommender.core.errors import ConfigError
from recommender.tools.bench.cold import bench_cold
from recommender.tools.bench.common import PARTS, load_average, machine_info, say
from recommender.tools.bench.deployment import retail_deployment
from recommender.tools.bench.merch import bench_merch
from recommender.tools.bench.logins import bench_logins
from recommender.tools.bench.report import (
    PartResult,
    format_table,
    load_baseline,
    now_iso,
    write_results,
)
from recommender.tools.bench.scale import ScalePlan, bench_scale
from recommender.tools.bench.search import bench_search
from recommender.tools.bench.serve import bench_serve
from recommender.tools.bench.train import bench_train


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
    merch_scale_rows: float = 1.0  # share of the scale preset's invoices the merch part's 100k-item model learns from
    logins_seconds: float = 15.0  # each /send_data run of the logins part (quiet, polite burst, flood)
    search_products: int = 100_000
    search_repeats: int = 3
    quick: bool = False

    @classmethod
    def quick_options(cls, **changes: Any) -> "Options":
        """Short runs to check the harness end to end: one training each, 3 s HTTP runs, a 200k-row scale set."""
        base = cls(train_repeats=1, serve_seconds=3.0, serve_rounds=2, warmup_seconds=1.0, latency_repeats=1,
                   cold_repeats=2, baskets=500, http_baskets=20_000, cached_baskets=500, scale=ScalePlan(20_000, 5_000, 4_000, max_cases=2_000, latency_baskets=500),
                   merch_scale_rows=1.0, logins_seconds=3.0, search_products=10_000, search_repeats=1,
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
        say(f"the machine is busy (load {load[0]} on {machine.get('cores')} cores): absolute figures will be noisy; "
             "ratios are measured in the same run")
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
            else:
                result = bench_scale(options)
            result.started_at, result.seconds = started_at, time.perf_counter() - t
            result.load_before, result.load_after = before, load_average()
            results.append(result)
    json_path, md_path = write_results(results, options.out_dir, machine, command)
    print(format_table([row for r in results for row in r.rows], before=load_baseline(options.out_dir)))
    print(f"\nmachine: {machine.get('cores')} cores, {machine.get('memory_gib')} GiB, Python {machine.get('python')}; "
          f"load before each part: " + ", ".join(f"{r.part} {r.load_before[0] if r.load_before else '?'}" for r in results))
    print(f"results: {md_path} and {json_path}")
    return results, json_path, md_path
