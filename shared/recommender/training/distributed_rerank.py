"""The learned re-ranker for the Spark engine: each validation period's first-stage model is built by Spark (the
distributed pipeline on the baskets before the period); the re-ranker's training data (the validation baskets'
candidates and their features) is small and built on the driver, with the single machine's code, from the input's
(basket, item) pairs collected there through Arrow (8 bytes a pair, numbered as ingest numbers them), which also
give the per-item tables serving reads (rerank_tables). LightGBM runs on the driver, as on one machine.
Imported only when the Spark engine trains a re-ranker.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recommender.core.items import ITEMS_FILE, Items
from recommender.serving.model import open_model
from recommender.training import holdout, reranker
from recommender.training.engine import fit_rerankers
from recommender.training.ingest import CleaningReport, Transactions, reorder_items
from recommender.training.recipe import Progress, TrainingParams, stage

# Builds a first-stage model from frames (distributed_frames.Frames) holding the given number of baskets into a folder;
# returns the manifest's model part.
BuildFirstStage = Callable[[Any, int, Path, Progress], dict]


@dataclasses.dataclass
class SparkReranking:
    """The driver's copy of the input (tx; train_tx without the held-out baskets) and the re-rankers fitted for
    the measured and the published model (None when the data gives none)."""

    tx: Transactions
    train_tx: Transactions
    measured: reranker.Fitted | None
    published: reranker.Fitted | None
    params: TrainingParams

    def finish(self, folder: Path, info: dict, measured: bool, progress: Progress) -> dict:
        """Write rerank.npz beside a Spark-built model (its tables, and the trees fitted for it) and add its part
        to the model's manifest part, as recipe.finish does on one machine."""
        fitted = self.measured if measured else self.published
        if fitted is not None:
            with stage(progress, "re-ranker tables"):
                info["rerank"] = write_tables(folder, self.train_tx if measured else self.tx, self.params, fitted)
        return info


def fit(
    spark: Any,
    frames: Any,
    report: CleaningReport,
    params: TrainingParams,
    build: BuildFirstStage,
    progress: Progress,
) -> SparkReranking:
    """The Spark engine's re-rankers, fitted as engine.single_engine fits them: validation periods carved from the
    driver's copy of the baskets, each period's first stage built by Spark on the baskets before it."""
    started = time.perf_counter()
    with stage(progress, "re-ranker: the input's (basket, item) pairs collected to the driver"):
        tx = collect_transactions(frames, report)
    train_tx, held = holdout.split(tx, params.holdout) if params.holdout else (tx, None)

    def first_stage(train: Transactions, folder: Path, _codes: set[str]) -> object:
        # The baskets the period's model learns without: the period, what follows it and the held-out baskets.
        kept = set(train.basket_ids)
        left_out = [b for b in tx.basket_ids if b not in kept]
        with stage(progress, f"re-ranker: first stage on the {len(kept):,} baskets before the period, by Spark"):
            info = build(without_baskets(spark, frames, left_out), len(kept), folder, lambda _text: None)
            info["rerank"] = write_tables(folder, train, params, reranker.Fitted(None, {"trees": False}))
        return open_model(lambda name: folder / name, "validation", {"model": info})

    measured, published = fit_rerankers(tx, train_tx, held, params, progress, first_stage)
    if measured is not None:
        progress(f"re-ranker: trained with Spark's first stages in {time.perf_counter() - started:.1f} s")
    return SparkReranking(tx, train_tx, measured, published, params)


def write_tables(folder: Path, tx: Transactions, params: TrainingParams, fitted: reranker.Fitted) -> dict:
    """reranker.write for a model Spark wrote into folder: tx's items put in the model's order first."""
    codes = Items.from_json((folder / ITEMS_FILE).read_bytes()).codes
    position = {code: i for i, code in enumerate(tx.item_codes)}
    return reranker.write(folder, reorder_items(tx, np.asarray([position[c] for c in codes])), params.rerank, fitted)


def without_baskets(spark: Any, frames: Any, invoices: list[str]) -> Any:
    """The frames without the given invoices' pairs and baskets (distributed_frames.Frames.without)."""
    return frames.without(spark, invoices)


def collect_transactions(frames: Any, report: CleaningReport) -> Transactions:
    """The cleaned input as ingest.load_transactions returns it (baskets and items numbered by first appearance,
    pairs sorted), from Spark's frames: only numbers cross to the driver, besides one string per basket and per
    item."""
    from pyspark.sql import functions as F

    # Items by their first row: aggregated once, read twice (collected, then joined to the pairs).
    firsts = frames.pairs.groupBy("code").agg(F.min("at").alias("first")).persist()
    items = firsts.join(frames.described, "code", "left").toPandas().sort_values("first")
    baskets = (
        frames.baskets.join(frames.basket_customer, "invoice", "left")
        .select("invoice", "first", "time", "customer")
        .toPandas()
        .sort_values("first")
    )
    item_first = items["first"].to_numpy(dtype=np.int64)
    basket_first = baskets["first"].to_numpy(dtype=np.int64)
    # Each (basket, item) pair as its basket's and item's first rows (two longs), numbered here.
    pairs = (
        frames.pairs.join(frames.baskets.select("invoice", F.col("first").alias("b")), "invoice")
        .join(F.broadcast(firsts.withColumnRenamed("first", "i")), "code")
        .select("b", "i")
        .toArrow()
    )
    firsts.unpersist()
    pair_basket = np.searchsorted(basket_first, pairs.column("b").to_numpy())
    pair_item = np.searchsorted(item_first, pairs.column("i").to_numpy())
    key = np.sort(pair_basket.astype(np.int64) << 32 | pair_item.astype(np.int64))
    # Customers numbered by their first basket: ingest numbers them by their first row, the same order when each
    # invoice's lines are together in the file (the reading keeps no row of a customer, only each basket's).
    named = baskets["customer"].notna().to_numpy()
    customer_ids, first_seen, owner = np.unique(
        baskets["customer"].to_numpy()[named].astype(str), return_index=True, return_inverse=True
    )
    number = np.empty(len(customer_ids), dtype=np.int32)
    number[np.argsort(first_seen)] = np.arange(len(customer_ids), dtype=np.int32)
    basket_customer = np.full(len(basket_first), -1, dtype=np.int32)
    basket_customer[named] = number[owner]
    seconds = baskets["time"].to_numpy(dtype=np.float64, na_value=np.nan)
    times = np.where(np.isnan(seconds), 0, seconds).astype(np.int64).astype("datetime64[s]")
    times[np.isnan(seconds)] = np.datetime64("NaT")
    prices = (
        np.array([float(v) if isinstance(v, str) and v else np.nan for v in items["price"]], dtype=np.float64)
        if frames.priced
        else None
    )
    return Transactions(
        item_codes=items["code"].tolist(),
        descriptions=items["description"].fillna("").tolist(),
        pair_basket=(key >> 32).astype(np.int32),
        pair_item=(key & 0xFFFFFFFF).astype(np.int32),
        basket_ids=baskets["invoice"].tolist(),
        basket_time=times,
        basket_customer=basket_customer,
        report=report,
        item_prices=prices,
    )
