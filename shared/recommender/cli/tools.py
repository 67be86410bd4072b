"""Commands over the product tools: evaluation, export, synthetic data."""

from __future__ import annotations

import argparse

from recommender.cli.common import command, engine_arguments
from recommender.core.settings import Settings
from recommender.core.storage import open_storage


@command("evaluate")
def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.tools import evaluation, evaluation_report

    report, folder = evaluation.run(
        args.path, days=args.days, out_dir=args.out, engine=args.engine, spark_master=args.spark_master, seed=args.seed
    )
    print()
    print(evaluation_report.table(report))
    cal = report.product_stats["calibration"]
    print(
        f"\n{report.cases:,} test cases; confidence: ECE {cal['ece']:.4f}, mean predicted {cal['mean_predicted']:.4f} "
        f"against {cal['mean_observed']:.4f} bought, on {cal['observations']:,} recommended items"
    )
    if (folder / "new_products.md").exists():
        print("\n" + (folder / "new_products.md").read_text().rstrip())
    print(f"report, table, HR@k plot and reliability diagram in {folder}/")
    return 0


@command("export")
def _export(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.tools import export

    model = export.served_model(open_storage(settings))
    versions = f"model {model.version}, feed {model.feed_version or 'none'}, rules {model.rules_version or 'none'}"
    if args.baskets:
        done = export.answer_baskets(model, args.baskets, args.out, resume=args.resume)
        kept = f", {done.skipped:,} kept from the previous run" if done.skipped else ""
        print(
            f"answered {done.rows:,} line(s) of {args.baskets} into {done.path} in {done.seconds:.1f} s "
            f"({done.errors:,} with an error{kept}; {versions})"
        )
    else:
        done = export.export_complements(model, args.out, args.n, args.format)
        print(
            f"wrote {done.rows:,} rows ({done.items:,} items x top {args.n}) to {done.path} in {done.seconds:.1f} s "
            f"({versions})"
        )
    return 0


@command("generate")
def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.tools import synthetic

    spec = synthetic.preset(args.preset, seed=args.seed)
    summary = synthetic.write_csv(spec, args.path)
    print(f"wrote {summary.rows:,} rows ({summary.invoices:,} invoices, {summary.products:,} products) to {args.path}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The evaluation's, export's and synthetic data's sub-commands."""
    p = sub.add_parser("evaluate", help="score the product against baselines on the last DAYS days of a file")
    p.add_argument("path")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--out", default="reports", help="folder for the report (JSON, table, PNG plot)")
    p.add_argument(
        "--seed", type=int, default=0, help="which item of each test basket is hidden (another seed, another)"
    )
    engine_arguments(p)

    p = sub.add_parser(
        "export",
        help="write every item's top N complements (csv, jsonl, parquet), or answer a "
        "JSON-lines file of baskets (--baskets)",
    )
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--n", type=int, default=10, help="complements per item (default 10)")
    p.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="default: from the output's file name")
    p.add_argument("--baskets", help='a JSON-lines file: one {"product_list": [...], "n": ..., options} per line')
    p.add_argument("--resume", action="store_true", help="with --baskets: keep the lines OUT already holds")

    p = sub.add_parser("generate", help="write the synthetic demo dataset")
    p.add_argument("path")
    p.add_argument("--preset", default="default", choices=["tiny", "default", "scale"])
    p.add_argument("--seed", type=int, default=0)
