"""The Spark engine's items and matrix rows from pairs as rows (invoice, code, at): used when baskets span parts, so
that their pairs had to be merged by Spark first (distributed_read); otherwise distributed_blocks builds both from
each part's block without a pair ever becoming a row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from recommender.training.recipe import TrainingParams


def items(frames: Any) -> pd.DataFrame:
    """Each item's first row, popularity, latest description and price, from the pairs in one aggregation (each
    (basket, item) pair is there once, with its first row)."""
    from pyspark.sql import functions as F

    return (
        frames.pairs.groupBy("code")
        .agg(F.min("at").alias("first"), F.count("*").alias("popularity"))
        .join(frames.described, "code", "left")
        .toPandas()
    )


def matrix_rows(spark: Any, frames: Any, codes: list[str], n_parts: int, params: TrainingParams) -> Any:
    """The matrix rows (one per basket, one per returning customer, capped to the items they bought most often) as an
    RDD of (indptr, indices, is_basket) blocks in n_parts partitions."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    pairs, baskets, basket_customer = frames.pairs, frames.baskets, frames.basket_customer
    index = spark.createDataFrame(pd.DataFrame({"code": codes, "idx": np.arange(len(codes), dtype=np.int32)}))
    item_pairs = pairs.join(F.broadcast(index), "code").select("invoice", "idx")
    basket_rows = item_pairs.groupBy("invoice").agg(F.sort_array(F.collect_list("idx")).alias("items"))
    customer_pairs = item_pairs.join(basket_customer, "invoice")
    returning = (
        basket_customer.join(baskets.select("invoice"), "invoice")
        .groupBy("customer")
        .count()
        .filter(F.col("count") >= params.customer_min_baskets)
        .select("customer")
    )
    ranked = (
        customer_pairs.groupBy("customer", "idx")
        .agg(F.count("*").alias("n"))
        .join(returning, "customer")
        .withColumn("rank", F.row_number().over(Window.partitionBy("customer").orderBy(F.desc("n"), F.asc("idx"))))
    )
    customer_rows = (
        ranked.filter(F.col("rank") <= params.customer_max_items)
        .groupBy("customer")
        .agg(F.sort_array(F.collect_list("idx")).alias("items"))
    )
    return (
        basket_rows.select("items", F.lit(True).alias("basket"))
        .unionByName(customer_rows.select("items", F.lit(False).alias("basket")))
        .repartition(n_parts)
        .mapInArrow(_csr_batches, "indptr binary, indices binary, basket binary")
        .rdd.mapPartitions(_csr_blocks)
    )


def _csr_batches(batches: Iterator[Any]) -> Iterator[Any]:
    """Matrix rows (sorted item lists, whether each is a basket) in Arrow batches, as one row of raw bytes per batch:
    the lists' offsets and values are taken whole from Arrow, no Python object per matrix row."""
    import pyarrow as pa

    for batch in batches:
        items = batch.column(0)
        offsets = items.offsets.to_numpy().astype(np.int64)
        values = items.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        basket = batch.column(1).to_numpy(zero_copy_only=False).astype(bool)
        values = values[offsets[0] : offsets[-1]]
        yield pa.RecordBatch.from_pydict(
            {
                "indptr": [(offsets - offsets[0]).tobytes()],
                "indices": [values.tobytes()],
                "basket": [basket.tobytes()],
            },
            schema=_csr_schema(),
        )


def _csr_schema() -> Any:
    """The Arrow schema _csr_batches yields."""
    import pyarrow as pa

    return pa.schema([("indptr", pa.binary()), ("indices", pa.binary()), ("basket", pa.binary())])


def _csr_blocks(rows: Iterator[Any]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The matrix rows of one partition as CSR (indptr, indices), with which rows are baskets (the others are
    customer histories): _csr_batches' pieces joined."""
    indptrs, indices, baskets = [], [], []
    end = 0
    for row in rows:
        indptr = np.frombuffer(row[0], dtype=np.int64)
        indptrs.append(indptr[1:] + end)
        end += int(indptr[-1])
        indices.append(np.frombuffer(row[1], dtype=np.int32))
        baskets.append(np.frombuffer(row[2], dtype=bool))
    indptr = np.concatenate([np.zeros(1, dtype=np.int64), *indptrs])
    yield (
        indptr,
        np.concatenate(indices) if indices else np.empty(0, dtype=np.int32),
        np.concatenate(baskets) if baskets else np.empty(0, dtype=bool),
    )
