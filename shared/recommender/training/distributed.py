"""The Spark engine (`make train ENGINE=spark`): the single-machine recipe, with the work done on Spark's executors.

Executors read the parts of the input (pandas / pyarrow, one task per part), clean them with ingest.clean_chunk,
the rules the single-machine trainer applies, and reduce each to its baskets, items and a block of its pairs as
numbers (distributed_read); Spark SQL merges the baskets and items. The executors renumber each block into the
matrix rows (distributed_blocks: baskets as they are, customers' histories merged by customer; distributed_rows when
a basket spans parts), and numpy on them computes the item-item table (distributed_table: co-occurrence by blocks of
items, each item's top-K neighbours, the per-item ridge regressions) and the products of the randomized SVD. Only
items x K (the table) and items x k (the SVD's blocks and the embeddings) reach the driver, which finishes the model
with the single-machine code (recipe.finish_model: Annoy index, table by source, items) and publishes it through the
same registry. Imported only when the Spark engine is asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from recommender.core.errors import DataFileError, RecommenderError
from recommender.training import copurchase, distributed_blocks, distributed_rows
from recommender.training.distributed_frames import (
    Frames,
    Gathered,
    gather,
    held_choice,
    held_from,
    sample_invoices_of,
)
from recommender.training.distributed_read import read_input
from recommender.training.distributed_table import item_item_table, one_blas_thread, row_matrix
from recommender.training.engine import Built, build_and_measure, with_rerank
from recommender.training.ingest import describe_report
from recommender.training.recipe import (
    ModelParts,
    Progress,
    TrainingParams,
    check_size,
    column_scale,
    embeddings_from_products,
    factors_for,
    finish_model,
    popularity_order,
    purchase_period,
    ridge_lambda,
    say,
    stage,
)
from recommender.training.sources import Source
from recommender.training.spark_session import (
    SparkJobFailed,
    data_error,
    executor_environment,
    failure_cause,
    session,
)

# Kept input rows per matrix partition: what a task routes to the item blocks and multiplies for the SVD grows with
# its rows, so a bigger input gets more partitions rather than bigger ones (the 100M-row set: 40).
ROWS_PER_PART = 2_500_000


def trainer(
    source: Source,
    params: TrainingParams,
    progress: Progress = say,
    master: str | None = None,
    encoding: str = "utf-8",
) -> Callable[[Path], Built]:
    """What pipeline.train calls with the version's folder: runs the Spark job, finishes the model on the driver,
    and returns the manifest's model part, the cleaning report and the engine (name, Spark version, master)."""
    if source.kind == ".xlsx":
        raise DataFileError(
            f"{source.name}: .xlsx is read by the single-machine trainer only; train it without "
            "ENGINE=spark, or save it as .csv or Parquet for Spark"
        )

    def fill(folder: Path) -> Built:
        spark, created = session(master)
        try:
            return _train(spark, source, params, folder, progress, encoding)
        except RecommenderError:
            raise
        except Exception as err:  # noqa: BLE001 - py4j and pyspark raise many types; one line for the user
            data = data_error(err)
            if data is not None:
                raise data from None
            raise SparkJobFailed(f"the Spark job failed: {failure_cause(err)[:400]}") from err
        finally:
            if created:
                spark.stop()

    return fill


def _train(
    spark: Any, source: Source, params: TrainingParams, folder: Path, progress: Progress, encoding: str = "utf-8"
) -> Built:
    from pyspark.sql import functions as F

    sc = spark.sparkContext
    progress(f"spark {spark.version} on {sc.master} ({sc.defaultParallelism} cores): {len(source.parts)} part(s)")
    endpoint = executor_environment(sc)
    t = time.perf_counter()
    # Each part is cleaned and reduced on its executor (distributed_read); Spark merges the parts' baskets and items.
    read = read_input(spark, list(source.parts), endpoint, source.name, encoding)
    report, pairs, baskets, basket_customer, described = (
        read.report,
        read.pairs,
        read.baskets,
        read.basket_customer,
        read.described,
    )
    priced = read.priced
    for line in describe_report(report):
        progress(f"  {line}")
    progress(f"read and cleaned in {time.perf_counter() - t:.1f} s")

    frames = Frames(pairs, baskets, basket_customer, described, priced, read.blocks)
    n_parts = matrix_partitions(report.rows_kept, sc.defaultParallelism)
    # The holdout: the most recent baskets, chosen as holdout.split_mask does (engine.build_and_measure says what
    # is trained and measured with them).
    chosen = held_choice(frames, report.baskets, params)
    kept: list[Frames] = []

    def without_held() -> Frames:
        if not kept:
            kept.append(frames.without(spark, chosen["invoice"].tolist()))
        return kept[0]

    # With blocks, the held-out baskets' items and each model's items and sample invoices come from one pass over
    # them (for the models build_and_measure will train: the published one, the measured one, or both).
    gathered: dict[tuple, Gathered] = {}
    if frames.blocks is not None:
        models = [frames]
        if chosen is not None:
            separate = params.holdout.separate(len(chosen), report.baskets)
            models = [without_held(), frames] if separate else [without_held()]
        held, gathered = gather(frames, chosen, models, params.seed)
    else:
        held = None if chosen is None else held_from(chosen, frames.pairs_of(chosen["invoice"].tolist()))

    # The re-ranker (RERANK=1): its first stages built here, its training data and trees on the driver.
    rr = None
    if params.rerank.enabled:
        from recommender.training import distributed_rerank

        rr = distributed_rerank.fit(
            spark,
            frames,
            report,
            params,
            lambda f, n, out, say: _model(spark, f, n, n_parts, params, out, say),
            progress,
        )
    done = build_and_measure(
        lambda out, say: _reranked(
            rr, out, _model(spark, frames, report.baskets, n_parts, params, out, say, gathered), False, say
        ),
        lambda out, _near, say: _reranked(
            rr,
            out,
            # all but the held-out baskets (each one basket of the input): counted without a Spark job
            _model(spark, without_held(), report.baskets - len(chosen), n_parts, params, out, say, gathered),
            True,
            say,
        ),
        held,
        report.baskets,
        params,
        folder,
        progress,
    )
    learned = frames if done.learned_all else without_held()
    span = learned.baskets.agg(F.min("time"), F.max("time")).collect()[0]
    period = purchase_period(np.array([span[0], span[1]], dtype="datetime64[s]")) if span[0] is not None else None
    for frame in read.cached:
        frame.unpersist()
    engine = {
        "name": "spark",
        "spark_version": spark.version,
        "master": sc.master,
        "default_parallelism": sc.defaultParallelism,
    }
    if done.evaluation is not None and rr is not None and rr.measured is not None:
        done.evaluation["rerank_periods"] = rr.measured.spec["periods"]  # as engine.single_engine says
    return Built(done.model, report, engine, period, done.evaluation, with_rerank(folder, done.extra))


def _reranked(rr: Any, folder: Path, info: dict, measured: bool, progress: Progress) -> dict:
    """A model's manifest part, with its re-ranker's file written beside it when one was trained."""
    return info if rr is None else rr.finish(folder, info, measured, progress)


def matrix_partitions(rows_kept: int, parallelism: int) -> int:
    """How many partitions the matrix rows get: two per core, more for a big input (ROWS_PER_PART)."""
    return max(2, 2 * parallelism, -(-rows_kept // ROWS_PER_PART))


def _model(
    spark: Any,
    frames: Frames,
    n_baskets: int,
    n_parts: int,
    params: TrainingParams,
    folder: Path,
    progress: Progress,
    gathered: dict[tuple, Gathered] | None = None,
) -> dict:
    """One model from the frames' baskets, written into folder: the items, the matrix rows, the item-item table
    and the embeddings on the executors, the rest on the driver (recipe.finish_model). Returns the manifest's
    model part. Its items' figures and sample invoices are taken from gathered when there (distributed_frames.gather),
    else read for it."""
    from pyspark import StorageLevel

    sc = spark.sparkContext
    # Items: numbered by first appearance, then ordered by popularity as recipe.build_model does; their descriptions
    # come from the whole input, the held-out baskets included (as ingest.select_baskets keeps them).
    excluded = np.asarray(frames.excluded, dtype=object)
    known = (gathered or {}).get(frames.excluded) if frames.blocks is not None else None
    if known is not None:
        items = known.figures.merge(frames.described.toPandas(), on="code", how="left")
    elif frames.blocks is not None:
        figures = distributed_blocks.item_figures(frames.blocks, excluded)
        items = figures.merge(frames.described.toPandas(), on="code", how="left")
    else:
        items = distributed_rows.items(frames)
    items = items.sort_values("first", kind="stable")
    check_size(len(items), n_baskets)
    items = items.iloc[popularity_order(items["popularity"].to_numpy())].reset_index(drop=True)
    n_items = len(items)
    codes = items["code"].tolist()
    descriptions = items["description"].fillna("").tolist()
    popularity = items["popularity"].to_numpy(dtype=np.int64)
    prices = (
        np.array([float(v) if isinstance(v, str) and v else np.nan for v in items["price"]], dtype=np.float64)
        if frames.priced
        else None
    )
    chosen = known.samples if known is not None else sample_invoices_of(frames, params.seed)

    # Matrix rows: one per basket, one per returning customer (capped to the items they bought most often).
    t = time.perf_counter()
    codes_b = None
    if frames.blocks is not None:
        rows, codes_b = distributed_blocks.matrix_rows(
            frames.blocks, codes, excluded, n_parts, params.customer_min_baskets, params.customer_max_items
        )
    else:
        rows = distributed_rows.matrix_rows(spark, frames, codes, n_parts, params)
    matrix = rows.persist(StorageLevel.MEMORY_AND_DISK)

    def block_figures(block: tuple[np.ndarray, ...]) -> tuple:
        signal = copurchase.measure(block[0], block[1], n_items)  # of this block; summed below
        together = np.zeros(n_items, dtype=bool)
        lengths = np.diff(block[0])
        together[block[1][np.repeat(lengths >= 2, lengths)]] = True
        return len(lengths), len(block[1]), np.bincount(block[1], minlength=n_items), signal.rows_with_two, together

    n_rows, n_entries, counts_vec, with_two, together = matrix.map(block_figures).treeReduce(
        lambda a, b: (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] | b[4])
    )
    counts_vec = counts_vec.astype(np.float64)  # rows holding each item
    n_customers = n_rows - n_baskets
    progress(
        f"matrix: {n_baskets:,} baskets + {n_customers:,} returning customers' histories x {n_items:,} "
        f"items, {n_entries:,} entries in {n_parts} partitions ({time.perf_counter() - t:.1f} s)"
    )
    signal = copurchase.Signal(n_rows, int(with_two), n_items, int(together.sum()))
    copurchase.check(signal, n_baskets, progress)

    k = factors_for(n_items, n_rows, params)
    k_nbrs = min(params.neighbors, n_items - 1)
    ridge = ridge_lambda(counts_vec, params)
    with stage(progress, f"item-item table: top {k_nbrs} neighbours per item, local ridge regression"):
        table_index, table_weight, pair_counts = item_item_table(
            sc, matrix, counts_vec, n_items, k_nbrs, ridge, progress
        )
    with stage(progress, f"svd: {k} factors"):
        embeddings = _embeddings(sc, matrix, counts_vec, n_items, k, params)
    matrix.unpersist()
    if codes_b is not None:
        codes_b.unpersist()
    parts_out = ModelParts(
        codes,
        descriptions,
        popularity,
        table_index,
        table_weight,
        k=k,
        ridge=ridge,
        baskets=n_baskets,
        customer_rows=n_customers,
        samples=chosen,
        pair_counts=pair_counts,
        prices=prices,
        signal=signal.as_dict(),
        embeddings=embeddings,
    )
    return finish_model(folder, parts_out, params, progress)


def _embeddings(sc: Any, matrix: Any, counts: np.ndarray, n_items: int, k: int, params: TrainingParams) -> np.ndarray:
    """recipe.embeddings_from_products with the products X'(X q) and (X q)'(X q) summed over the partitions: each
    task sums the products of all the partitions it reads (one per core, no shuffle), so one items x (k + 16)
    array per core, not per partition, is sent to the driver at each iteration."""
    scale_b = sc.broadcast(column_scale(counts, params.popularity_damping))
    per_core = matrix.coalesce(max(1, min(matrix.getNumPartitions(), sc.defaultParallelism)))

    def product(q: np.ndarray, kind: str) -> np.ndarray:
        q_b = sc.broadcast(q)

        def part(blocks: Iterator[tuple[np.ndarray, ...]]) -> Iterator[np.ndarray]:
            one_blas_thread()
            total = None
            for block in blocks:
                x = row_matrix(block, n_items, scale_b.value)
                y = x @ q_b.value
                out = (x.T @ y) if kind == "normal" else (y.T @ y)
                if total is None:
                    total = out
                else:
                    total += out
            if total is not None:
                yield total

        try:
            return per_core.mapPartitions(part).reduce(np.add)
        finally:
            q_b.unpersist()

    try:
        return embeddings_from_products(
            n_items, k, params.seed, params.svd_iterations, lambda q: product(q, "normal"), lambda q: product(q, "gram")
        )
    finally:
        scale_b.unpersist()
