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
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recommender.core.errors import DataFileError
from recommender.core.extras import optional
from recommender.core.storage import LocalStorage
from recommender.training import calibration, holdout
from recommender.training.ingest import Transactions, load_transactions, select_baskets
from recommender.training.recipe import TrainingParams, basket_matrix
from recommender.training.reranker import RerankParams

K = 10
CURVE_K = 20
EASE_LAMBDAS = (5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
EASE_MAX_ITEMS = 12_000  # beyond this the dense items x items eigendecomposition takes too long and too much memory


@dataclass
class Cases:
    """Leave-one-out cases on a training model's items: query item rows and the hidden item row of each."""

    queries: list[np.ndarray]
    hidden: np.ndarray

    def __len__(self) -> int:
        return len(self.hidden)


@dataclass
class Split:
    """Training transactions and the cases drawn from the held-out days."""

    train: Transactions
    cases: Cases
    cutoff: np.datetime64


@dataclass
class MethodResult:
    """The scores of one method on one set of cases."""

    name: str
    hr: float
    mrr: float
    ndcg: float
    coverage: float
    hr_curve: list[float] = field(default_factory=list)  # HR@k for k = 1..CURVE_K
    note: str = ""
    ece: float | None = None  # expected calibration error of its confidence (the product only)
    hr_interval: tuple[float, float] | None = None  # 95% bootstrap interval of HR@10 over the test cases
    hits: list[bool] = field(default_factory=list, repr=False)  # per case: the hidden item in the top K


@dataclass
class Gain:
    """HR@10 of one method over another's, with the 95% paired bootstrap interval of the ratio over test cases."""

    method: str
    against: str
    ratio: float
    low: float
    high: float


def temporal_split(tx: Transactions, days: int, seed: int = 0) -> Split:
    """Train on baskets before the last `days` days; draw the cases from those days."""
    if np.isnat(tx.basket_time).all():
        raise DataFileError("evaluation needs dates: the file has no usable InvoiceDate column")
    dated = ~np.isnat(tx.basket_time)
    cutoff = tx.basket_time[dated].max() - np.timedelta64(days, "D")
    is_test = dated & (tx.basket_time >= cutoff)
    train = select_baskets(tx, dated & ~is_test)
    if train.report.baskets < 2 or not is_test.any():
        raise DataFileError(f"the last {days} days leave too little data on one side of the split")
    index = {code: i for i, code in enumerate(train.item_codes)}
    items_by_basket = np.split(
        tx.pair_item[np.argsort(tx.pair_basket, kind="stable")],
        np.cumsum(np.bincount(tx.pair_basket, minlength=len(tx.basket_ids)))[:-1],
    )
    test = sorted(np.flatnonzero(is_test), key=lambda b: tx.basket_ids[b])
    drawn = holdout.leave_one_out([[tx.item_codes[i] for i in items_by_basket[b]] for b in test], index, seed)
    queries = [np.array([index[c] for c in query], dtype=np.int64) for _, query, _ in drawn]
    hidden = [index[h] for _, _, h in drawn]
    if not hidden:
        raise DataFileError(f"no test basket in the last {days} days has two products known to the training data")
    return Split(train, Cases(queries, np.array(hidden, dtype=np.int64)), cutoff)


def score(name: str, ranked: list[np.ndarray], cases: Cases, n_items: int, note: str = "") -> MethodResult:
    """HR, MRR and NDCG at K, coverage of the top-K lists, and the HR@k curve, from ranked item rows."""
    ranks = np.full(len(cases), np.inf)
    seen: set[int] = set()
    for c, (items, hidden) in enumerate(zip(ranked, cases.hidden)):
        items = list(items)
        seen.update(int(i) for i in items[:K])
        if hidden in items:
            ranks[c] = items.index(hidden) + 1
    hit = ranks <= K
    return MethodResult(
        name=name,
        hr=float(hit.mean()),
        mrr=float(np.where(hit, 1.0 / ranks, 0.0).mean()),
        ndcg=float(np.where(hit, 1.0 / np.log2(ranks + 1), 0.0).mean()),
        coverage=len(seen) / n_items,
        hr_curve=[float((ranks <= k).mean()) for k in range(1, CURVE_K + 1)],
        note=note,
        hr_interval=bootstrap_interval(hit),
        hits=hit.tolist(),
    )


BOOTSTRAP_DRAWS = 2000


def _resamples(n: int, seed: int = 0) -> np.ndarray:
    """BOOTSTRAP_DRAWS resamples of n test cases (the same ones for every method: paired)."""
    return np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP_DRAWS, n))


def bootstrap_interval(hit: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the hit rate over test cases."""
    hit = np.asarray(hit, dtype=np.float64)
    if not len(hit):
        return (0.0, 0.0)
    means = hit[_resamples(len(hit), seed)].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def gain(method: MethodResult, against: MethodResult, seed: int = 0) -> Gain:
    """method's HR@10 over against's, with the 95% paired bootstrap interval of the ratio (same resampled cases)."""
    a, b = np.asarray(method.hits, dtype=np.float64), np.asarray(against.hits, dtype=np.float64)
    draws = _resamples(len(a), seed)
    ratios = a[draws].mean(axis=1) / np.maximum(b[draws].mean(axis=1), 1e-12)
    return Gain(
        method.name,
        against.name,
        float(a.mean() / max(b.mean(), 1e-12)),
        float(np.percentile(ratios, 2.5)),
        float(np.percentile(ratios, 97.5)),
    )


def _top(scores: np.ndarray, cases: Cases, n: int = CURVE_K) -> list[np.ndarray]:
    """Top-n rows of each case's score row, basket items excluded, ties by row number."""
    out = []
    for row, query in zip(scores, cases.queries):
        row = np.asarray(row, dtype=np.float64).copy()
        row[query] = -np.inf
        top = np.argpartition(-row, n)[:n]
        out.append(top[np.lexsort((top, -row[top]))])
    return out


def _query_matrix(cases: Cases, n_items: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(cases)), [len(q) for q in cases.queries])
    cols = np.concatenate(cases.queries)
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(cases), n_items))


def popularity(split: Split) -> list[np.ndarray]:
    """Most popular training items, the same for every basket."""
    pop = np.asarray(basket_matrix(split.train).sum(axis=0)).ravel()
    return _top(np.broadcast_to(pop, (len(split.cases), len(pop))), split.cases)


def cooccurrence(split: Split) -> list[np.ndarray]:
    """Sum over the basket of the cosine similarity of co-purchase."""
    x = basket_matrix(split.train).tocsc().astype(np.float64)
    gram = (x.T @ x).tocsr()
    norms = np.sqrt(gram.diagonal())
    norms[norms == 0] = 1
    cosine = sp.diags(1 / norms) @ gram @ sp.diags(1 / norms)
    cosine.setdiag(0)
    q = _query_matrix(split.cases, x.shape[1])
    return _chunked_top(lambda rows: (q[rows] @ cosine).toarray(), split.cases)


def _chunked_top(scores_of: Callable[[slice], np.ndarray], cases: Cases, chunk: int = 512) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for start in range(0, len(cases), chunk):
        rows = slice(start, min(len(cases), start + chunk))
        out.extend(_top(scores_of(rows), Cases(cases.queries[rows], cases.hidden[rows])))
    return out


class Ease:
    """EASE (Steck 2019): B = I - P diag(1/diag(P)), P = (X'X + lambda I)^-1, diagonal forced to zero.

    The Gram matrix is diagonalised once, so each lambda costs one matrix product instead of an inverse.
    """

    def __init__(self, train: Transactions) -> None:
        x = basket_matrix(train).astype(np.float64)
        gram = (x.T @ x).toarray()
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(gram)

    def weights(self, lam: float) -> np.ndarray:
        """The item-item weight matrix B for one lambda."""
        p = (self.eigenvectors / (self.eigenvalues + lam)) @ self.eigenvectors.T
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        return b

    def recommend(self, lam: float, cases: Cases) -> list[np.ndarray]:
        """Ranked item rows for each case."""
        b = self.weights(lam)
        q = _query_matrix(cases, b.shape[0])
        return _chunked_top(lambda rows: np.asarray(q[rows] @ b), cases)


def tune_ease(validation: Split, progress: Callable[[str], None]) -> tuple[float, dict[float, float]]:
    """The lambda with the best validation HR@10, and the whole grid."""
    ease = Ease(validation.train)
    n_items = len(validation.train.item_codes)
    grid = {
        lam: score("ease", ease.recommend(lam, validation.cases), validation.cases, n_items).hr for lam in EASE_LAMBDAS
    }
    best = max(grid, key=lambda lam: (grid[lam], -lam))
    progress("EASE lambda on validation (HR@10): " + ", ".join(f"{lam:g}: {hr:.4f}" for lam, hr in grid.items()))
    return best, grid


def write_parquet(tx: Transactions, path: Path) -> None:
    """Cleaned transactions as a Parquet file of one row per (basket, item), in basket order: training on it
    numbers baskets, items and customers as the transactions do (what the Spark engine is evaluated on)."""
    pa = optional("pyarrow", "writing Parquet")
    import pyarrow.parquet as pq

    order = np.lexsort((tx.pair_item, tx.pair_basket))
    basket, item = tx.pair_basket[order], tx.pair_item[order]
    customer = tx.basket_customer[basket]
    customer_ids = np.array(["", *[f"C{c}" for c in range(int(tx.basket_customer.max(initial=-1)) + 1)]], dtype=object)
    times = tx.basket_time[basket]
    pq.write_table(
        pa.table(
            {
                "InvoiceNo": np.array(tx.basket_ids, dtype=object)[basket],
                "StockCode": np.array(tx.item_codes, dtype=object)[item],
                "Description": np.array(tx.descriptions, dtype=object)[item],
                "CustomerID": customer_ids[customer + 1],
                "InvoiceDate": pa.array(times.astype("datetime64[s]"), mask=np.isnat(times)),
            }
        ),
        path,
    )


def product(
    split: Split,
    params: TrainingParams,
    progress: Callable[[str], None],
    engine: str = "single",
    spark_master: str | None = None,
    keep: list | None = None,
) -> tuple[list[np.ndarray], dict]:
    """Ranked item rows from the served model: trained (by either engine), published, loaded and queried by the
    production code (appended to keep, when given, for later sections)."""
    from recommender.serving.model import load_model
    from recommender.training.pipeline import publish_built, publish_model

    with tempfile.TemporaryDirectory(prefix="recommender-eval-") as tmp:
        storage = LocalStorage(Path(tmp) / "store")
        t = time.perf_counter()
        if engine == "spark":
            optional("pyspark", "ENGINE=spark")  # before writing its Parquet input (the spark extra brings pyarrow)
            from recommender.training.distributed import trainer
            from recommender.training.sources import resolve

            data = Path(tmp) / "train.parquet"
            write_parquet(split.train, data)
            t = time.perf_counter()
            manifest = publish_built(
                trainer(resolve(data), params, lambda _m: None, master=spark_master),
                params,
                storage,
                None,
                progress=lambda _m: None,
            )
        else:
            manifest = publish_model(split.train, params, storage, source=None, progress=lambda _m: None)
        train_seconds = time.perf_counter() - t
        model = load_model(storage, manifest["version"])
        if keep is not None:
            keep.append(model)
        codes = split.train.item_codes
        rows = {code: i for i, code in enumerate(codes)}  # the cases' rows (the model numbers items its own way)
        baskets = [[codes[i] for i in query] for query in split.cases.queries]
        ranked, cold = [], []
        for basket in baskets:
            t = time.perf_counter()
            answer = model.recommend(basket, CURVE_K)
            cold.append(time.perf_counter() - t)
            ranked.append(np.array([rows[s.item.stock_code] for s in answer.items], dtype=np.int64))
        first = model.first_stage()
        first_ranked = [
            np.array([rows[s.item.stock_code] for s in first.recommend(basket, CURVE_K).items], dtype=np.int64)
            for basket in baskets
        ]
        # A serving process answers many baskets with the same model: time a second pass, once Annoy's
        # answers for the items are remembered.
        warm = []
        for basket in baskets:
            t = time.perf_counter()
            model.recommend(basket, K)
            warm.append(time.perf_counter() - t)
        size = sum(
            p.stat().st_size for p in (Path(tmp) / "store").rglob("*") if p.is_file() and p.name != "manifest.json"
        )
        reliability = confidence_on_test(
            model, [[codes[i] for i in query] + [codes[h]] for query, h in zip(split.cases.queries, split.cases.hidden)]
        )
    cold_us, warm_us = np.array(cold) * 1e6, np.array(warm) * 1e6
    stats = {
        "engine": manifest.get("engine", {}).get("name", "single"),
        "train_seconds": round(train_seconds, 2),
        "rerank": manifest["model"].get("rerank"),
        "first_stage_ranked": first_ranked,
        "artifact_bytes": size,
        "query_p50_us": round(float(np.percentile(warm_us, 50)), 1),
        "query_p99_us": round(float(np.percentile(warm_us, 99)), 1),
        "first_pass_p99_us": round(float(np.percentile(cold_us, 99)), 1),
        "calibration": reliability,
    }
    progress(
        f"product: trained in {train_seconds:.1f} s, {size / 1e6:.1f} MB, "
        f"query p50 {stats['query_p50_us']:.0f} us, p99 {stats['query_p99_us']:.0f} us; confidence ECE "
        f"{reliability['ece']:.4f} on {reliability['observations']:,} recommended items"
    )
    return ranked, stats


def confidence_on_test(model: Any, baskets: list[list[str]], seed: int = 1) -> dict:
    """Predicted against observed: each test basket (its known items) split at random into a query and what was
    bought, the model's 10 items asked for through Model.recommend, and each item's served confidence set against
    whether the shopper bought it. Reliability bins and the expected calibration error (ECE, 10 equal bins)."""
    predicted: list[float] = []
    observed: list[bool] = []
    splits = holdout.random_splits(baskets, model.items.index, seed)
    for _, query, bought in splits:
        answer = model.recommend(query, K)
        scores = np.array([s.score for s in answer.items])
        predicted.extend(model.confidence(scores, np.arange(1, len(scores) + 1), popular=answer.fallback).tolist())
        observed.extend(s.item.stock_code in bought for s in answer.items)
    p, o = np.asarray(predicted), np.asarray(observed, dtype=np.float64)
    return {
        "baskets": len(splits),
        "observations": len(p),
        "calibrated": model.calibrated,
        "ece": calibration.expected_calibration_error(p, o) if len(p) else None,
        "mean_predicted": float(p.mean()) if len(p) else None,
        "mean_observed": float(o.mean()) if len(o) else None,
        "bins": calibration.reliability(p, o),
    }


@dataclass
class Report:
    """Everything one evaluation run measured."""

    seed: int
    dataset: str
    days: int
    cases: int
    validation_cases: int
    train_baskets: int
    train_items: int
    cutoff: str
    ease_lambda: float | None
    ease_validation: dict[str, float]
    results: list[MethodResult]
    product_stats: dict
    created_at: str
    gains: list[Gain] = field(default_factory=list)


def table(report: Report) -> str:
    """The results as a Markdown table, best HR@10 first (with its 95% bootstrap interval), then the relative
    gains with theirs."""
    lines = [
        "| method | HR@10 | 95% interval | MRR@10 | NDCG@10 | coverage | ECE | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(report.results, key=lambda r: -r.hr):
        ece = "-" if r.ece is None else f"{r.ece:.4f}"
        low, high = r.hr_interval or (r.hr, r.hr)
        lines.append(
            f"| {r.name} | {r.hr:.4f} | {low:.4f}-{high:.4f} | {r.mrr:.4f} | {r.ndcg:.4f} | {r.coverage:.3f} | {ece} "
            f"| {r.note} |"
        )
    if report.gains:
        lines += ["", "| relative gain in HR@10 | ratio | 95% interval (paired bootstrap) |", "|---|---|---|"]
        for g in report.gains:
            lines.append(f"| {g.method} over {g.against} | {g.ratio:.3f} | {g.low:.3f}-{g.high:.3f} |")
    return "\n".join(lines)


def plot(report: Report, path: Path) -> None:
    """HR@k for k = 1..20, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ks = range(1, CURVE_K + 1)
    for r in sorted(report.results, key=lambda r: -r.hr):
        ax.plot(ks, r.hr_curve, marker="o", markersize=3, label=f"{r.name} (HR@10 {r.hr:.3f})")
    ax.set_xlabel("k (recommendations shown)")
    ax.set_ylabel("HR@k (hidden item recommended)")
    ax.set_title(f"{report.dataset}: {report.cases:,} test baskets, last {report.days} days")
    ax.set_xticks(list(ks))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(report: Report, path: Path) -> None:
    """The reliability diagram of the product's confidence on the test period: mean predicted against observed
    purchase rate per bin (the diagonal is perfect calibration), with how many items fall in each bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = report.product_stats["calibration"]
    bins = cal["bins"]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 6.5), dpi=120, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o", label="product")
    for b in bins:
        ax.annotate(
            f"{b['count']:,}",
            (b["predicted"], b["observed"]),
            textcoords="offset points",
            xytext=(5, -10),
            fontsize=7,
            color="dimgrey",
        )
    ax.set_ylabel("observed: share bought")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(
        f"{report.dataset}: confidence on the last {report.days} days, ECE {cal['ece']:.3f}\n"
        f"{cal['observations']:,} items for {cal['baskets']:,} test baskets (part asked, the rest bought)",
        fontsize=9,
    )
    hist.bar(
        [(b["low"] + b["high"]) / 2 for b in bins], [b["count"] for b in bins], width=0.09, color="tab:blue", alpha=0.6
    )
    hist.set_xlabel("predicted: confidence of a recommended item")
    hist.set_ylabel("items")
    hist.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
