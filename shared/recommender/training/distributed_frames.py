"""The Spark engine's cleaned input as Spark frames (Frames), and what the driver picks out of it: the held-out
baskets (holdout.split's choice) and the sample invoices (sample_invoices.draw's), each collected alone."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from recommender.training import distributed_blocks, sample_invoices
from recommender.training.holdout import HeldOut
from recommender.training.recipe import TrainingParams


@dataclass(frozen=True)
class Frames:
    """The cleaned input a model is trained from: the (basket, item) pairs with their first row (`at`, file order),
    baskets (first row, time, distinct items), each basket's customer, each code's latest description and price,
    and whether the input has prices. With blocks, the pairs are rows only when read (made from the blocks), and a
    model learns from the blocks' baskets but the excluded ones."""

    pairs: Any
    baskets: Any
    basket_customer: Any
    described: Any
    priced: bool
    blocks: Any = None  # each part's pairs as a block (distributed_blocks); None: from the pairs as rows
    excluded: tuple[str, ...] = ()  # invoices left out of the model (the blocks still hold them)

    def without(self, spark: Any, invoices: list[str]) -> Frames:
        """These frames without the given invoices' pairs and baskets (customers and descriptions stay the whole
        input's, as ingest.select_baskets keeps them)."""
        from pyspark.sql import functions as F

        out = F.broadcast(spark.createDataFrame([(b,) for b in invoices], "invoice string"))
        return replace(
            self,
            pairs=self.pairs.join(out, "invoice", "left_anti"),
            baskets=self.baskets.join(out, "invoice", "left_anti"),
            excluded=(*self.excluded, *invoices),
        )

    def pairs_of(self, invoices: list[str]) -> Any:
        """The given invoices' pairs (invoice, code, at) on the driver, as a pandas frame: with blocks, picked out
        on the executors, no other pair made a row."""
        from pyspark.sql import functions as F

        if self.blocks is not None:
            return distributed_blocks.pairs_frame(self.blocks, invoices).toPandas()
        wanted = F.broadcast(self.pairs.sparkSession.createDataFrame([(b,) for b in invoices], "invoice string"))
        return self.pairs.join(wanted, "invoice").select("invoice", "code", "at").toPandas()


def held_out(frames: Frames, n_baskets: int, params: TrainingParams) -> HeldOut | None:
    """holdout.split on the cluster: the most recent dated baskets (ties by file order), or the last ones in file
    order when nothing is dated; their items and times collected (a few thousand baskets at most)."""
    import pandas as pd
    from pyspark.sql import functions as F

    if not params.holdout:
        return None
    baskets = frames.baskets
    n_dated = baskets.filter(F.col("time").isNotNull()).count()
    if n_dated:
        size = params.holdout.size(n_dated)
        latest = baskets.filter(F.col("time").isNotNull()).orderBy(F.desc("time"), F.desc("first"))
    else:
        size = params.holdout.size(n_baskets)
        latest = baskets.orderBy(F.desc("first"))
    if not size:
        return None
    held = latest.limit(size).toPandas().sort_values("first")
    found = frames.pairs_of(held["invoice"].tolist())
    found = found.sort_values("at")
    items = {invoice: group["code"].tolist() for invoice, group in found.groupby("invoice", sort=False)}
    times = np.array([None if pd.isna(t) else int(t) for t in held["time"]], dtype="datetime64[s]")
    stamps = times[~np.isnat(times)]
    return HeldOut(
        held["invoice"].tolist(),
        times,
        [items.get(b, []) for b in held["invoice"]],
        stamps.min() if len(stamps) else None,
    )


def sample_invoices_of(frames: Frames, seed: int) -> list[dict]:
    """sample_invoices.draw on the cluster: the same invoices drawn from the same numbering of the baskets (by
    first appearance). Only the eligible baskets' first rows reach the driver (8 bytes a basket), which numbers
    them by sorting; then only the chosen baskets are collected."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    sized = frames.baskets.select("first", "invoice", "time", "size").persist(StorageLevel.MEMORY_AND_DISK)
    eligible = sized.filter((F.col("size") >= sample_invoices.MIN_ITEMS) & (F.col("size") <= sample_invoices.MAX_ITEMS))
    firsts = column(eligible, "first")
    if not len(firsts):
        eligible = sized.filter(F.col("size") > 0)
        firsts = column(eligible, "first")
    n = len(firsts)
    picked = np.random.default_rng(seed).choice(n, size=min(sample_invoices.COUNT, n), replace=False)
    wanted = np.sort(firsts)[picked].tolist()  # the picked positions in first-appearance order, by their first row
    chosen = [
        tuple(r) for r in eligible.filter(F.col("first").isin(wanted)).select("first", "invoice", "time").collect()
    ]
    sized.unpersist()
    names = [r[1] for r in sorted(chosen)]
    codes: dict[str, list[str]] = {name: [] for name in names}
    found = frames.pairs_of(names)
    for invoice, code in zip(found["invoice"], found["code"]):
        codes[invoice].append(code)
    out = []
    for _first, invoice, when in sorted(chosen):
        date = None if when is None else str(np.datetime_as_string(np.datetime64(int(when), "s"), unit="D"))
        out.append({"invoice": str(invoice), "date": date, "items": sorted(codes[invoice])})
    return out


def column(frame: Any, name: str) -> np.ndarray:
    """One long column of a frame on the driver, through Arrow (no Python objects per row)."""
    table = frame.select(name).toArrow()
    return table.column(0).to_numpy() if table.num_rows else np.empty(0, dtype=np.int64)
