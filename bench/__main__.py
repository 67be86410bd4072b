"""`python -m bench <part> [options]` from the repository root: the benchmarks, the Spark comparison, the soak test
and the API fuzzer; every `make bench*`, `make soak` and `make fuzz` target is a thin wrapper over it.

`python -m bench child-train|child-quality <json>` is a timed step in a fresh interpreter (see common.run_child).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from bench.common import PARTS, shown
from bench.options import DATA_DIR_ENV, DEFAULT_DATA_DIR, Options
from recommender.cli import run_mapped
from recommender.core import registry
from recommender.local.emulator import use_dummy_credentials

TEMPLATE_HELP = "SAM template whose HttpApi events give the routes (its folder is the repository)"


def _benchmark(args: argparse.Namespace) -> int:
    from bench import runner

    options = Options.quick_options() if args.quick else Options()
    options = replace(
        options, template=args.template, cache_dir=args.cache, **({"out_dir": args.out} if args.out else {})
    )
    parts = PARTS if args.part == "all" else (args.part,)
    runner.run(parts, options, command="python -m bench " + " ".join(sys.argv[1:]))
    return 0


def _spark(args: argparse.Namespace) -> int:
    from bench.spark import SparkBenchOptions, bench_spark

    options = replace(
        SparkBenchOptions(),
        cache_dir=args.cache,
        out_dir=args.out,
        master=args.master,
        big_invoices=args.big_invoices,
        scale=not args.no_scale,
        agreement=not args.no_agreement,
        invoices=args.invoices,
    )
    if args.driver_memory:
        options = replace(options, driver_memory=args.driver_memory)
    bench_spark(options)
    return 0


def _fuzz(args: argparse.Namespace) -> int:
    from bench.fuzz import fuzz

    print(f"fuzzing every operation of the API for {args.seconds:g} s (schemathesis, all checks) ...", flush=True)
    result = fuzz(args.seconds, args.template, seed=args.seed)
    print(result.output.rstrip())
    summary = {**result.summary(), "machine_load": [round(x, 2) for x in os.getloadavg()]}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"\n{result.test_cases:,} requests over {result.operations} operations in {result.seconds:.0f} s: "
        + (
            "no failure, no 5xx, no dropped connection, nothing unexpected in the server's log"
            if result.ok
            else f"{len(result.failures)} kinds of failure, {len(result.errors)} errors, "
            f"{len(result.server_errors)} unexpected server log lines"
        )
    )
    return 0 if result.ok else 1


def _soak(args: argparse.Namespace) -> int:
    from bench.soak import SoakPlan, soak

    report = soak(SoakPlan(duration=args.duration), args.template, args.data)
    report["machine_load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["finished_at"] = registry.utcnow().isoformat(timespec="seconds")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    rss = report["rss_mib"]
    print(
        f"{report['requests']:,} requests in {report['duration_s']:g} s ({report['requests_per_second']:,.0f}/s); "
        f"errors: {report['errors']}; p50 {report['p50_ms']['median']:.2f} ms, "
        f"p99 {report['p99_ms']['median']:.2f} ms (worst {report['p99_ms']['max']:.2f} ms); RSS {rss['after_warmup']} -> {rss['end']} MiB after warm-up "
        f"({rss['growth_percent']:+.1f}%); " + ", ".join(f"{v} {k}" for k, v in report["events"].items())
    )
    for problem in report["problems"]:
        print(f"problem: {problem}", file=sys.stderr)
    if args.out:
        print(f"report: {shown(args.out)}")
    return 0 if report["errors"] == 0 and rss["growth_percent"] <= 5 else 1


def _path(value: str) -> Path:
    # Absolute, so that child processes (which run from the repository root) see the same file.
    return Path(value).expanduser().resolve()


BENCHMARKS = {
    "all": "every part below in turn, one table; bench/results/latest.{md,json}",
    "train": "training on Online Retail csv.gz and xlsx: time and peak RSS per stage",
    "serve": "POST /send_data over HTTP (wrk) against bare Starlette and FastAPI ceiling apps",
    "cold": "the cold start of the recommend Lambda handler, with the slowest imports",
    "scale": "10M rows / 100k products: training, index size, latency, HR@10, growth",
    "merch": "merchandising: feed, 1,000 rules, filters, explain vs plain; export throughput",
    "logins": "/send_data latency while 20 clients send wrong passwords; logins under a 20-address flood",
    "search": "catalog search (GET /items) on a 100k-item catalog",
    "widget": "the shop widget's first paint of recommendations on the demo shop, in headless Chromium",
    "events": "POST /events in batches of 50 to the local store: events/s and p99",
    "report": "the analytics report over a month of generated events (100,000 sessions a day)",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every part."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0],
        epilog=f"The Online Retail files (online_retail.csv.gz, online_retail.xlsx) are read from ${DATA_DIR_ENV}, "
        f"default {DEFAULT_DATA_DIR}/ in the repository.",
    )
    sub = parser.add_subparsers(dest="part", required=True, metavar="PART")
    for part, text in BENCHMARKS.items():
        p = sub.add_parser(part, help=text)
        p.add_argument(
            "--quick", action="store_true", help="short runs that check the harness (results in bench/results/quick/)"
        )
        p.add_argument("--template", type=_path, default=Options.template, help=TEMPLATE_HELP)
        p.add_argument(
            "--cache",
            type=_path,
            default=Options.cache_dir,
            help="folder keeping the generated scale datasets (default data/bench)",
        )
        p.add_argument(
            "--out", type=_path, help="results folder (default bench/results, or bench/results/quick with --quick)"
        )
        p.set_defaults(handler=_benchmark)

    p = sub.add_parser(
        "spark",
        help="both training engines on the 10M-row scale set (local[2]), their agreement on "
        "Online Retail; optionally a bigger synthetic set",
    )
    p.add_argument(
        "--big-invoices",
        type=int,
        default=0,
        help="add a Spark run on this many invoices (~10 rows each; 10000000 gives ~100M rows)",
    )
    p.add_argument("--no-scale", action="store_true", help="skip the 10M-row comparison")
    p.add_argument("--no-agreement", action="store_true", help="skip the Online Retail agreement")
    p.add_argument("--master", default="local[2]")
    p.add_argument(
        "--driver-memory",
        help="the driver JVM's heap (local mode: the executors' too); default: half the machine's memory",
    )
    p.add_argument("--cache", type=_path, default=Options.cache_dir, help="folder keeping the generated datasets")
    p.add_argument("--out", type=_path, default=Options.out_dir, help="results folder (default bench/results)")
    p.add_argument("--invoices", type=int, default=1_000_000, help="scale set size (default: the scale preset)")
    p.set_defaults(handler=_spark)

    p = sub.add_parser(
        "fuzz",
        help="property-based tests of the whole HTTP API from its OpenAPI schema "
        "(schemathesis) against a freshly started local server",
    )
    p.add_argument("--seconds", type=float, default=600, help="time budget (default 600)")
    p.add_argument("--seed", type=int, help="schemathesis's seed (default: random)")
    p.add_argument("--template", type=_path, default=Options.template, help=TEMPLATE_HELP)
    p.add_argument("--out", type=_path, help="write the figures as JSON here (make fuzz: bench/results/fuzz.json)")
    p.set_defaults(handler=_fuzz)

    p = sub.add_parser(
        "soak",
        help="steady load of real baskets on the local server while models are promoted, the "
        "feed and rules change, users come and go and tokens expire",
    )
    p.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    p.add_argument(
        "--data", type=_path, help="purchase history to train on and sample baskets from (default: the synthetic set)"
    )
    p.add_argument("--template", type=_path, default=Options.template, help=TEMPLATE_HELP)
    p.add_argument("--out", type=_path, help="write the report as JSON here (make soak: bench/results/soak.json)")
    p.set_defaults(handler=_soak)
    return parser


def _child_tasks() -> dict[str, Callable[[dict], None]]:
    from bench.scale import child_quality
    from bench.train import child_train, child_xlsx_parse

    return {"child-train": child_train, "child-quality": child_quality, "child-xlsx-parse": child_xlsx_parse}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one part; errors with a message for the user become one line on stderr and exit status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("child-"):
        _child_tasks()[argv[0]](json.loads(argv[1]))
        return 0
    args = build_parser().parse_args(argv)

    def chosen() -> int:
        # Through the environment, so that servers started from here and boto3 itself see them.
        use_dummy_credentials(os.environ)
        return args.handler(args)

    return run_mapped(chosen)


if __name__ == "__main__":
    sys.exit(main())
