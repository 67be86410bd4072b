"""The product as it is served, evaluated: trained by either engine, published, loaded and asked through the code
that answers /send_data, timed, and its served confidence set against what test shoppers bought."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recommender.core.extras import optional
from recommender.core.storage import LocalStorage
from recommender.tools.evaluation_protocol import CURVE_K, K, Split
from recommender.training import calibration, holdout
from recommender.training.ingest import Transactions
from recommender.training.recipe import TrainingParams


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
    columns = {
        "InvoiceNo": np.array(tx.basket_ids, dtype=object)[basket],
        "StockCode": np.array(tx.item_codes, dtype=object)[item],
        "Description": np.array(tx.descriptions, dtype=object)[item],
        "CustomerID": customer_ids[customer + 1],
        "InvoiceDate": pa.array(times.astype("datetime64[s]"), mask=np.isnat(times)),
    }
    if tx.item_prices is not None:  # each item's price on every line: the re-ranker's price feature sees the same
        prices = tx.item_prices[item]
        columns["UnitPrice"] = pa.array(prices, mask=np.isnan(prices))
    pq.write_table(pa.table(columns), path)


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
        first_stage = model.first_stage_orders(model.items.rows(query))
        ranks = np.arange(1, len(scores) + 1)
        predicted.extend(model.confidence(scores, ranks, popular=answer.fallback, first_stage=first_stage).tolist())
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
