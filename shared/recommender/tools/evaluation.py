"""Offline evaluation: a temporal leave-one-out protocol scoring the served model against strong baselines.

Protocol. Test baskets are the invoices of the last `days` days of the file; the model trains on every invoice
before them. For each test invoice (in InvoiceNo order) with at least two distinct products known to the
training data, one of those (sorted by code) is hidden, chosen by a seeded generator; the others are the
query. Metrics at 10: hit rate, MRR, NDCG (one relevant item), and item coverage of all answers.

The product is scored through the code that answers /send_data: the model is trained by recipe.build_model,
loaded by model.load_model and asked through Model.recommend. Baselines (popularity, item co-occurrence cosine,
EASE) see the same cases; EASE's lambda is tuned on a validation split carved the same way from the training
period, never on the test days. The product's training holds out its own most recent baskets, as `make train`
does (training/holdout.py): what is scored is what would be published.

Confidence. Each test basket's known items are split at random into a query and what was bought; the product's
10 items and their served confidence (Model.confidence) are set against what was bought: a reliability diagram
and the expected calibration error (ECE, 10 equal-width bins).

This module runs the whole evaluation (run); its parts are tools.evaluation_protocol (cases and scores),
tools.baselines, tools.product_evaluation (the served model) and tools.evaluation_report (table and plots).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from recommender.tools.baselines import EASE_MAX_ITEMS, Ease, cooccurrence, popularity, tune_ease
from recommender.tools.evaluation_protocol import gain, score, temporal_split
from recommender.tools.evaluation_report import Report, plot, plot_reliability, table
from recommender.tools.product_evaluation import product
from recommender.training.ingest import load_transactions
from recommender.training.recipe import TrainingParams
from recommender.training.reranker import RerankParams


def run(
    path: str | Path,
    days: int = 30,
    out_dir: str | Path = "reports",
    params: TrainingParams = TrainingParams(rerank=RerankParams()),
    seed: int = 0,
    progress: Callable[[str], None] = print,
    engine: str = "single",
    spark_master: str | None = None,
) -> tuple[Report, Path]:
    """The whole evaluation: split, tune EASE on validation, score every method on the test cases, write the report."""
    path = Path(path)
    progress(f"reading {path}")
    tx = load_transactions(path)
    test = temporal_split(tx, days, seed)
    validation = temporal_split(test.train, days, seed)
    n_items = len(test.train.item_codes)
    progress(
        f"test: {len(test.cases):,} cases from baskets on or after {str(test.cutoff)[:10]}; training on "
        f"{test.train.report.baskets:,} baskets, {n_items:,} items; validation: {len(validation.cases):,} cases"
    )
    results = []
    served: list = []  # the model scored, for the new-products section
    ranked, stats = product(test, params, progress, engine, spark_master, keep=served)
    first_ranked = stats.pop("first_stage_ranked")
    reranked = bool((stats.get("rerank") or {}).get("trees"))
    results.append(
        score(
            "product (first stage + learned re-ranker)" if reranked else "product (first stage, no re-ranker)",
            ranked,
            test.cases,
            n_items,
            "served path" + (", trained on Spark" if engine == "spark" else ""),
        )
    )
    results[0].ece = stats["calibration"]["ece"]
    if reranked:
        results.append(score("first-stage alone (Annoy over SVD + item-item table)", first_ranked, test.cases, n_items))
    results.append(score("popularity", popularity(test), test.cases, n_items))
    results.append(score("co-occurrence cosine", cooccurrence(test), test.cases, n_items))
    ease_lambda, grid = None, {}
    if n_items <= EASE_MAX_ITEMS:
        ease_lambda, grid = tune_ease(validation, progress)
        results.append(
            score(
                "EASE",
                Ease(test.train).recommend(ease_lambda, test.cases),
                test.cases,
                n_items,
                f"lambda {ease_lambda:g} (tuned on validation)",
            )
        )
    else:
        progress(f"EASE skipped: {n_items:,} items need a dense {n_items:,}^2 matrix")
    by_name = {r.name.split(" ")[0]: r for r in results}
    gains = [
        gain(results[0], by_name[other])
        for other in ("EASE", "first-stage", "popularity")
        if other in by_name and by_name[other].hr > 0
    ]
    for g in gains:
        progress(f"gain: {g.method} over {g.against}: x{g.ratio:.3f} (95% interval {g.low:.3f}-{g.high:.3f})")
    report = Report(
        seed=seed,
        dataset=path.name,
        days=days,
        cases=len(test.cases),
        validation_cases=len(validation.cases),
        train_baskets=test.train.report.baskets,
        train_items=n_items,
        cutoff=str(test.cutoff),
        ease_lambda=ease_lambda,
        ease_validation={f"{k:g}": v for k, v in grid.items()},
        results=results,
        product_stats=stats,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        gains=gains,
    )
    folder = Path(out_dir) / (
        f"evaluation-{path.name.split('.')[0]}-{days}d"
        + ("-spark" if engine == "spark" else "")
        + (f"-seed{seed}" if seed else "")
    )
    folder.mkdir(parents=True, exist_ok=True)
    saved = asdict(report)
    for r in saved["results"]:
        r.pop("hits")  # per-case figures: the interval says what they would
    (folder / "report.json").write_text(json.dumps(saved, indent=1))
    (folder / "table.md").write_text(table(report) + "\n")
    plot(report, folder / "hr_at_k.png")
    plot_reliability(report, folder / "reliability.png")
    from recommender.tools import new_items_evaluation  # products the model never saw, placed from a feed

    new_items_evaluation.section(tx, test.train, test.cutoff, params, seed, folder, progress, plain=served[0])
    return report, folder
