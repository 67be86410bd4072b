"""Scale benchmark: the synthetic "scale" preset (10M rows, 100k products): training, memory, latency, HR@10, growth."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    GiB,
    growth_exponent,
    print_result,
    run_child,
    say,
)
from bench.deployment import recommend_latency, sample_baskets
from bench.options import Options, ScalePlan
from bench.report import PartResult, Row, target_row
from bench.train import measure_training, slowest_stage, stage_table


# ---------------------------------------------------------------------------------------------------------
# 4. Scale: the synthetic generator's "scale" preset (10M rows, 100k products, 1M invoices).
# ---------------------------------------------------------------------------------------------------------
def synthetic_dataset(spec: Any, folder: Path) -> tuple[Path, dict]:
    """The csv.gz for spec in folder, generated once and reused while the spec and the generator are unchanged."""
    import hashlib

    from recommender.tools import synthetic

    source_hash = synthetic.source_digest()
    digest = hashlib.sha256((repr(spec) + source_hash).encode()).hexdigest()[:10]
    stem = f"synthetic-{spec.invoices}inv-{spec.products}prod"
    path = folder / f"{stem}-{digest}.csv.gz"
    meta_path = path.with_name(path.name + ".json")
    if path.exists() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(f"{stem}-*.csv.gz*"):
        stale.unlink()
    say(f"generating {path.name} (once; kept for later runs)")
    t = time.perf_counter()
    summary = synthetic.write_csv(spec, path)
    meta = {
        "spec": asdict(spec),
        "rows": summary.rows,
        "invoices": summary.invoices,
        "products": summary.products,
        "customers": summary.customers,
        "generated_seconds": round(time.perf_counter() - t, 1),
        "bytes": path.stat().st_size,
        "generator_sha256": source_hash,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return path, meta


def scale_quality(
    source: str, model_storage: str | None, days: int, max_cases: int, latency_baskets: int, seed: int = 0
) -> dict:
    """HR@10 of the product against popularity on the file's own temporal split (evaluation's protocol and code),
    and Model.recommend latency of the model trained on the whole file (when model_storage holds it)."""
    from recommender.core.registry import active_version
    from recommender.core.storage import LocalStorage
    from recommender.serving.model import load_model
    from recommender.tools import baselines, evaluation_protocol, product_evaluation
    from recommender.training.ingest import load_transactions
    from recommender.training.pipeline import TrainingParams

    t = time.perf_counter()
    tx = load_transactions(source)
    out: dict[str, Any] = {"load_seconds": time.perf_counter() - t}
    if model_storage:
        storage = LocalStorage(model_storage)
        model = load_model(storage, active_version(storage))
        baskets = sample_baskets(tx, latency_baskets, seed)
        out["latency"] = recommend_latency(model, baskets, n=10, repeats=3)
        out["latency"]["items"] = len(model.items)
        del model
    split = evaluation_protocol.temporal_split(tx, days, seed)
    del tx
    out["cases_available"] = len(split.cases)
    if len(split.cases) > max_cases:
        pick = np.sort(np.random.default_rng(seed).choice(len(split.cases), max_cases, replace=False))
        split = replace(
            split, cases=evaluation_protocol.Cases([split.cases.queries[i] for i in pick], split.cases.hidden[pick])
        )
    n_items = len(split.train.item_codes)
    t = time.perf_counter()
    ranked, stats = product_evaluation.product(split, TrainingParams(), progress=lambda _m: None)
    product = evaluation_protocol.score("product", ranked, split.cases, n_items)
    popular = evaluation_protocol.score("popularity", baselines.popularity(split), split.cases, n_items)
    out.update(
        {
            "cases": len(split.cases),
            "cutoff": str(split.cutoff),
            "train_baskets": split.train.report.baskets,
            "train_items": n_items,
            "hr_product": product.hr,
            "hr_popularity": popular.hr,
            "mrr_product": product.mrr,
            "coverage_product": product.coverage,
            "split_model": stats,
            "eval_seconds": time.perf_counter() - t,
        }
    )
    return out


def child_quality(args: dict) -> None:
    print_result(scale_quality(**args))


def bench_scale(options: Options) -> PartResult:
    """Part 4: train on 10M rows / 100k products; size, query latency, HR@10 vs popularity, growth with size."""
    from recommender.tools import synthetic

    plan = options.scale
    full = synthetic.preset("scale", invoices=plan.invoices, products=plan.products, customers=plan.customers)
    sweep_rows = plan.row_fractions[-1] if plan.row_fractions else 1.0
    specs = {("rows", 1.0, 1.0): full}
    for f in plan.row_fractions:
        specs[("rows", f, 1.0)] = replace(full, invoices=max(1000, round(full.invoices * f)))
    for f in plan.product_fractions:
        specs[("products", sweep_rows, f)] = replace(
            full, invoices=max(1000, round(full.invoices * sweep_rows)), products=max(100, round(full.products * f))
        )
    datasets = {key: synthetic_dataset(spec, options.cache_dir) for key, spec in specs.items()}

    path, meta = datasets[("rows", 1.0, 1.0)]
    keep = options.cache_dir / "scale-model"
    shutil.rmtree(keep, ignore_errors=True)
    say(f"training on {path.name}: {meta['rows']:,} rows, {meta['products']:,} products")
    try:
        main = measure_training(path, 1, keep=keep)
        say("query latency on the full model; HR@10 on the temporal split (trains a second model)")
        quality = run_child(
            "child-quality",
            {
                "source": str(path),
                "model_storage": str(keep),
                "days": plan.days,
                "max_cases": plan.max_cases,
                "latency_baskets": plan.latency_baskets,
            },
        )
        quality.pop("_stderr", None)
    finally:
        shutil.rmtree(keep, ignore_errors=True)

    growth_runs = []
    for key, (gpath, gmeta) in datasets.items():
        if key == ("rows", 1.0, 1.0):
            run = main
        else:
            say(f"growth: training on {gpath.name} ({gmeta['rows']:,} rows)")
            run = measure_training(gpath, 1)
        growth_runs.append(
            {
                "sweep": key[0],
                "rows": gmeta["rows"],
                "products": gmeta["spec"]["products"],
                "items": run["counts"].get("items"),
                "seconds": run["seconds"],
                "peak_rss": run["peak_rss"],
                "baseline_rss": run["stages"].get("imports", {}).get("peak_rss", 0),
                "stages": {k: v["seconds"] for k, v in run["stages"].items()},
            }
        )
    details = {
        "dataset": meta,
        "train": main,
        "quality": quality,
        "growth_runs": growth_runs,
        "growth": growth_estimate(growth_runs, sweep_rows),
        "plan": asdict(plan),
        "cache_dir": str(options.cache_dir),
    }
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
        Row(
            "scale",
            "dataset",
            meta["rows"],
            "rows",
            note=f"{meta['invoices']:,} invoices, {meta['products']:,} products, {meta['bytes'] / 1e6:.0f} MB csv.gz",
        ),
        target_row(
            "scale",
            "train: total wall time",
            "scale_train_seconds",
            round(main["seconds"], 1),
            "s",
            slowest_stage(main["stages"]),
        ),
        target_row(
            "scale",
            "train: peak RSS",
            "scale_peak_rss_gib",
            round(main["peak_rss"] / GiB, 2),
            "GiB",
            f"in stage {worst[0]}",
        ),
        Row(
            "scale",
            "index size on disk (index.ann)",
            round(index_bytes / 2**20, 1),
            "MiB",
            note=f"all artifacts {sum(main['artifact_bytes'].values()) / 2**20:,.0f} MiB",
        ),
        Row(
            "scale",
            "query p50 (in-process)",
            round(latency.get("p50_us", float("nan")), 1),
            "µs",
            note=f"{latency.get('items', 0):,} items, n=10",
        ),
        target_row(
            "scale",
            "query p99 (in-process)",
            "scale_query_p99_ms",
            round(latency.get("p99_us", float("nan")) / 1000, 3),
            "ms",
            f"first pass over the baskets: p99 {latency.get('first_pass_p99_us', float('nan')) / 1000:.2f} ms"
            if "first_pass_p99_us" in latency
            else "",
        ),
        Row(
            "scale",
            "HR@10 product",
            round(hr_p, 4),
            "",
            note=f"{quality['cases']:,} test baskets, last {plan.days} days",
        ),
        Row("scale", "HR@10 popularity", round(hr_pop, 4), ""),
        target_row("scale", "HR@10 lift over popularity", "scale_hr_lift", round(lift, 2), "x"),
        Row(
            "scale",
            "time growth with rows (exponent)",
            round(growth["time_rows"], 2),
            "",
            note=f"{growth['time_rows_top']:.2f} between the two largest; 10x rows: "
            f"~{growth['time_10x_rows'] / 60:,.0f} min",
        ),
        Row(
            "scale",
            "memory growth with rows (exponent)",
            round(growth["memory_rows"], 2),
            "",
            note=f"{growth['memory_rows_top']:.2f} between the two largest; 10x rows: "
            f"~{growth['memory_10x_rows'] / GiB:,.1f} GiB",
        ),
        Row("scale", "time growth with products (exponent)", round(growth["time_products"], 2), ""),
        Row("scale", "memory growth with products (exponent)", round(growth["memory_products"], 2), ""),
    ]
    md = [
        "## Scale",
        "",
        f"Synthetic data from `recommender.tools.synthetic` (preset `scale`"
        f"{'' if (plan.invoices, plan.products) == (1_000_000, 100_000) else f', resized to {plan.invoices:,} invoices / {plan.products:,} products'}), "
        f"cached under `{details.get('cache_dir', 'data/bench')}`. One training run per size in a fresh process. HR@10: "
        f"`recommender.tools.evaluation`'s protocol (last {plan.days} days held out, one known item hidden per basket, "
        f"seeded), {quality['cases']:,} of {quality['cases_available']:,} cases sampled, asked through "
        "Model.recommend of a model trained on the earlier days.",
        "",
        stage_table({"full": main}),
        "",
        "Growth (one run per size; memory exponents fitted on peak RSS above the interpreter's baseline):",
        "",
        "| sweep | rows | products | items | train s | peak RSS MiB | slowest stage |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in growth_runs:
        stage, secs = max(g["stages"].items(), key=lambda kv: kv[1])
        md.append(
            f"| {g['sweep']} | {g['rows']:,} | {g['products']:,} | {g['items']:,} | {g['seconds']:.1f} | "
            f"{g['peak_rss'] / 2**20:,.0f} | {stage} {secs:.1f} s |"
        )
    md += [
        "",
        f"Fitted over all sizes: time ~ rows^{growth['time_rows']:.2f}, memory ~ rows^{growth['memory_rows']:.2f} "
        f"(products fixed; between the two largest: ^{growth['time_rows_top']:.2f} and "
        f"^{growth['memory_rows_top']:.2f}); time ~ products^{growth['time_products']:.2f}, memory ~ products^"
        f"{growth['memory_products']:.2f} (rows fixed). Extrapolated to 10x the rows with the exponents between "
        f"the two largest: ~{growth['time_10x_rows'] / 60:,.0f} min, ~{growth['memory_10x_rows'] / GiB:,.1f} GiB.",
    ]
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
    est["time_10x_rows"] = full["seconds"] * 10**time_exp
    est["memory_10x_rows"] = full["baseline_rss"] + above(full) * 10**memory_exp
    return est
