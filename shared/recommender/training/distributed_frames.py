"""The Spark engine's cleaned input as Spark frames (Frames), and what the driver picks out of it: the held-out
baskets (holdout.split's choice) and the sample invoices (sample_invoices.draw's); with blocks, their items and the
models' items' figures come from one pass over the blocks (gather)."""

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


def held_choice(frames: Frames, n_baskets: int, params: TrainingParams) -> Any:
    """holdout.split's choice on the cluster: the most recent dated baskets (ties by file order), or the last ones
    in file order when nothing is dated, as a pandas frame (invoice, first, time, size) in file order; None when
    there is no holdout."""
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
    return latest.limit(size).toPandas().sort_values("first")


def held_from(held: Any, found: Any) -> HeldOut:
    """The held-out baskets (held_choice's) with their items, from their pairs (invoice, code, at)."""
    import pandas as pd

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


def sample_choice(frames: Frames, seed: int) -> list[tuple]:
    """sample_invoices.draw's choice on the cluster: the same invoices drawn from the same numbering of the baskets
    (by first appearance), as (first, invoice, time) in that order. Only the eligible baskets' first rows reach the
    driver (8 bytes a basket), which numbers them by sorting; then only the chosen baskets are collected."""
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
    return sorted(chosen)


def samples_from(chosen: list[tuple], found: Any) -> list[dict]:
    """The sample invoices (sample_choice's) with their items, from their pairs (invoice, code, at)."""
    codes: dict[str, list[str]] = {invoice: [] for _first, invoice, _when in chosen}
    for invoice, code in zip(found["invoice"], found["code"]):
        if invoice in codes:
            codes[invoice].append(code)
    out = []
    for _first, invoice, when in chosen:
        date = None if when is None else str(np.datetime_as_string(np.datetime64(int(when), "s"), unit="D"))
        out.append({"invoice": str(invoice), "date": date, "items": sorted(codes[invoice])})
    return out


def sample_invoices_of(frames: Frames, seed: int) -> list[dict]:
    """sample_invoices.draw on the cluster (sample_choice), the chosen baskets' items collected."""
    chosen = sample_choice(frames, seed)
    return samples_from(chosen, frames.pairs_of([r[1] for r in chosen]))


@dataclass(frozen=True)
class Gathered:
    """What one pass over the blocks gave a model's frames (keyed by their excluded invoices): its items' figures
    (code, first, popularity) and its sample invoices."""

    figures: Any
    samples: list[dict]


def gather(frames: Frames, held: Any, models: list[Frames], seed: int) -> tuple[HeldOut | None, dict[tuple, Gathered]]:
    """The held-out baskets' items (held_from), and item_figures' and sample_invoices_of's answers for each of models, from ONE
    pass over the blocks (rather than one per question): the same values, each pass costing seconds at 10M rows."""
    choices = [sample_choice(f, seed) for f in models]
    wanted = [] if held is None else held["invoice"].tolist()
    wanted += [r[1] for chosen in choices for r in chosen]
    exclusions = [np.asarray(f.excluded, dtype=object) for f in models]
    figures, found = distributed_blocks.gather(frames.blocks, exclusions, sorted(set(wanted)))
    out = None
    if held is not None:
        out = held_from(held, found[found["invoice"].isin(held["invoice"])])
    gathered = {
        f.excluded: Gathered(fig, samples_from(chosen, found)) for f, fig, chosen in zip(models, figures, choices)
    }
    return out, gathered


def column(frame: Any, name: str) -> np.ndarray:
    """One long column of a frame on the driver, through Arrow (no Python objects per row)."""
    table = frame.select(name).toArrow()
    return table.column(0).to_numpy() if table.num_rows else np.empty(0, dtype=np.int64)
