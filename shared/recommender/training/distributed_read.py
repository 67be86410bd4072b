"""The Spark engine's reading: each part read and cleaned on an executor (ingest.read_part, ingest.clean_chunk, the
single machine's rules) and reduced there, in numpy, to what the model needs of it.

A part's rows never reach the JVM. Its executor sends, in one Arrow stream:
- its distinct (basket, item) pairs, each with its first row, as one block of numbers (distributed_blocks);
- its baskets: first row, earliest dated line, distinct items, the customer of its last line that names one;
- its items: the latest (dated, then in file order) non-empty description and price;
- its distinct customers, and the cleaning report's counts.
Spark then merges the parts' items (each item's latest description and price) and checks, with one count per
basket, that no basket spans parts: then the parts' pairs and baskets are final as sent, and no input row is ever
grouped. Baskets that do span parts (a part cut mid-invoice) are merged, with their pairs. "Latest" and "first"
compare (part, row in part) positions: the order of the single machine's reading. The pairs become rows only when
a basket spans parts, or for what asks for them as rows (the re-ranker's copy of the input).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recommender.core.errors import DataFileError
from recommender.training.distributed_blocks import BLOCK_PAIRS, encode, pairs_frame
from recommender.training.ingest import (
    NO_TIME,
    REASONS,
    CleanChunk,
    CleaningReport,
    Codebook,
    check_cleaned,
    clean_chunk,
)

BLOCK, BASKET, ITEM, CUSTOMER, SUMMARY = range(5)
# A row's position in the input: its part in the high bits, its row in the part below (parts of up to 2^40 rows).
PART_SHIFT = 40
# One schema for every kind of row; a kind leaves the columns it does not use null (free in Arrow). A basket's
# customer, an item's description and a customer's id are in `value`; a part's counts are JSON in `value`.
COLUMNS = (
    ("kind", "int"),
    ("invoice", "string"),
    ("code", "string"),
    ("at", "long"),
    ("time", "long"),
    ("size", "long"),
    ("value", "string"),
    ("value_time", "long"),
    ("value_at", "long"),
    ("price", "string"),
    ("price_time", "long"),
    ("price_at", "long"),
    ("block", "binary"),
)
PARTIALS_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
# Rows per Arrow batch sent to the JVM: a part's baskets go in slices, not as one batch of a million rows.
BATCH_ROWS = 500_000
# Up to this many baskets spanning parts, their pairs alone are merged (the list of them broadcast); beyond it,
# every pair goes through one group-by.
SPANNING_BROADCAST = 200_000


def _latest(key: np.ndarray, when: np.ndarray, at: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each key among the rows where mask holds, the row with the greatest (when, at): (keys, rows)."""
    rows = np.flatnonzero(mask)
    if not len(rows):
        return np.empty(0, dtype=np.int64), rows
    rows = rows[np.lexsort((at[rows], when[rows], key[rows]))]
    k = key[rows]
    last = np.append(k[1:] != k[:-1], True)
    return k[last], rows[last]


@dataclass
class _Rows:
    """A chunk's kept rows as integer arrays over its part's codebooks."""

    basket: np.ndarray
    item: np.ndarray
    customer: np.ndarray  # -1: none on this line
    time: np.ndarray
    at: np.ndarray
    description: np.ndarray  # object
    price: np.ndarray  # object, "" when none


def part_partials(part: int, chunks: Iterable[pd.DataFrame], block_pairs: int = BLOCK_PAIRS) -> list[Any]:
    """One part's raw chunks cleaned (ingest.clean_chunk) and reduced to its pairs, baskets, items, customers and
    counts: Arrow record batches of PARTIALS_SCHEMA."""
    invoices, items, customers = Codebook(np.int64), Codebook(np.int64), Codebook(np.int64)
    pieces: list[_Rows] = []
    rows_read, priced, kept = 0, False, 0
    dropped = dict.fromkeys(REASONS, 0)
    for chunk in chunks:
        clean: CleanChunk = clean_chunk(chunk)
        rows_read += clean.rows_read
        priced = priced or clean.price_coded is not None
        for reason, n in clean.dropped.items():
            dropped[reason] += n
        n = len(clean)
        if not n:
            continue
        # Each column's per-row array is built from its codes on every access: once each here.
        customer_text, price = clean.customer, clean.price
        guest = customer_text == ""
        customer = np.full(n, -1, dtype=np.int64)
        if (~guest).any():
            customer[~guest] = customers.encode(customer_text[~guest])
        pieces.append(
            _Rows(
                invoices.encode(clean.invoice),
                items.encode(clean.code),
                customer,
                clean.time,
                (np.int64(part) << PART_SHIFT) + np.arange(kept, kept + n, dtype=np.int64),
                clean.description,
                price if price is not None else np.full(n, "", dtype=object),
            )
        )
        kept += n
    summary = {"rows_read": rows_read, "dropped": [dropped[r] for r in REASONS], "priced": priced}
    out = _batches(SUMMARY, 1, value=np.array([json.dumps(summary)], dtype=object))
    if pieces:
        out += _reduced(pieces, invoices.array(), items.array(), customers.array(), priced, block_pairs)
    return out


def _batches(kind: int, n: int, **columns: Any) -> list[Any]:
    """n rows of one kind as Arrow batches of at most BATCH_ROWS: the columns given (numpy; a masked array for
    nulls), every other column null."""
    import pyarrow as pa

    types = {"int": pa.int32(), "long": pa.int64(), "string": pa.string(), "binary": pa.binary()}
    arrays = []
    for name, kind_name in COLUMNS:
        if name == "kind":
            arrays.append(pa.array(np.full(n, kind, dtype=np.int32)))
        elif name in columns:
            values = columns[name]
            mask = np.ma.getmaskarray(values) if np.ma.isMaskedArray(values) else None
            data = np.ma.getdata(values) if mask is not None else values
            if kind_name == "string" and mask is None:
                mask = np.equal(data, None)
            arrays.append(pa.array(data, type=types[kind_name], mask=mask if mask is not None and mask.any() else None))
        else:
            arrays.append(pa.nulls(n, types[kind_name]))
    batch = pa.RecordBatch.from_arrays(arrays, names=[name for name, _ in COLUMNS])
    return [batch.slice(start, BATCH_ROWS) for start in range(0, max(n, 1), BATCH_ROWS)] if n else []


def _masked(values: np.ndarray, valid: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_array(values, mask=~valid)


def _reduced(
    pieces: list[_Rows],
    invoice_values: np.ndarray,
    code_values: np.ndarray,
    customer_values: np.ndarray,
    priced: bool,
    block_pairs: int,
) -> list[Any]:
    basket = np.concatenate([p.basket for p in pieces])
    item = np.concatenate([p.item for p in pieces])
    customer = np.concatenate([p.customer for p in pieces])
    when = np.concatenate([p.time for p in pieces])
    at = np.concatenate([p.at for p in pieces])
    n_baskets, n_items = len(invoice_values), len(code_values)

    # Pairs: each (basket, item) once, with its first row (rows are in file order: a stable sort keeps it first).
    key = basket << 32 | item
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    pair_rows = order[np.concatenate([[True], sorted_key[1:] != sorted_key[:-1]])]
    pair_basket = basket[pair_rows]

    # Baskets: first row (baskets are numbered by first appearance), earliest dated line, distinct items, and the
    # customer of the last line naming one.
    first_at = np.full(n_baskets, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_at, basket, at)
    never = np.iinfo(np.int64).max
    earliest = np.full(n_baskets, never, dtype=np.int64)
    np.minimum.at(earliest, basket, np.where(when == NO_TIME, never, when))
    named = np.flatnonzero(customer >= 0)
    last_named = np.full(n_baskets, -1, dtype=np.int64)
    last_named[basket[named]] = named  # rows in file order: the last assignment wins
    has_customer = last_named >= 0
    basket_customer = np.full(n_baskets, None, dtype=object)
    basket_customer[has_customer] = customer_values[customer[last_named[has_customer]]]
    local_customer = np.where(has_customer, customer[np.maximum(last_named, 0)], -1)
    # sorted by (basket, item): each basket's pairs together, as the block keeps them
    blobs = encode(
        invoice_values,
        code_values,
        customer_values,
        pair_basket,
        item[pair_rows],
        at[pair_rows],
        local_customer,
        block_pairs,
    )
    out = _batches(BLOCK, len(blobs), block=np.array(blobs, dtype=object))
    out += _batches(
        BASKET,
        n_baskets,
        invoice=invoice_values,
        at=first_at,
        time=_masked(earliest, earliest != never),
        size=np.bincount(pair_basket, minlength=n_baskets).astype(np.int64),
        value=basket_customer,
        value_at=_masked(at[np.maximum(last_named, 0)], has_customer),
    )

    # Items: the latest non-empty description and price, by (time, row); null when the part has none.
    columns: dict[str, Any] = {"code": code_values}
    for name, values in (("value", np.concatenate([p.description for p in pieces])), ("price", None)):
        if values is None:
            if not priced:
                continue
            values = np.concatenate([p.price for p in pieces])
        keys, rows = _latest(item, when, at, values != "")
        text = np.full(n_items, None, dtype=object)
        text[keys] = values[rows]
        columns[name] = text
        columns[f"{name}_time"] = _spread(keys, when[rows], n_items)
        columns[f"{name}_at"] = _spread(keys, at[rows], n_items)
    out += _batches(ITEM, n_items, **columns)
    return out + _batches(CUSTOMER, len(customer_values), value=customer_values)


def _spread(keys: np.ndarray, values: np.ndarray, n: int) -> np.ma.MaskedArray:
    """values at keys in n rows, masked elsewhere."""
    out = np.zeros(n, dtype=np.int64)
    out[keys] = values
    valid = np.zeros(n, dtype=bool)
    valid[keys] = True
    return _masked(out, valid)


def partials_reader(
    parts: list, endpoint: str | None, encoding: str = "utf-8"
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """The executor side of reading: each part read (ingest.read_part), cleaned and reduced (part_partials)."""
    from recommender.training.ingest import read_part
    from recommender.training.sources import default_s3_client, local_file
    from recommender.training.spark_session import carry_data_error

    block_pairs = BLOCK_PAIRS  # read here: the closure carries it to the executors

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            for p in batch.column(0).to_pylist():
                part = parts[p]
                try:
                    with local_file(part, default_s3_client(endpoint)) as path:
                        yield from part_partials(p, read_part(path, part.kind, part.name, encoding), block_pairs)
                except DataFileError as err:
                    raise carry_data_error(err) from None

    return run


@dataclass(frozen=True)
class Input:
    """The cleaned input, merged: the cleaning report, the (basket, item) pairs with their first row (`at`), the
    baskets (invoice, first, time, size), each basket's customer, each code's latest description and price,
    whether the input has prices, the cached frames to release at the end, and the parts' blocks of pairs."""

    report: CleaningReport
    pairs: Any
    baskets: Any
    basket_customer: Any
    described: Any
    priced: bool
    cached: tuple
    blocks: Any = None  # each part's pairs as a block (distributed_blocks); None when baskets span parts


def read_input(spark: Any, parts: list, endpoint: str | None, name: str, encoding: str = "utf-8") -> Input:
    """Every part read on the executors and merged by Spark; DataFileError (check_cleaned) when nothing is left."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    sc = spark.sparkContext
    tasks = spark.createDataFrame(sc.parallelize([(i,) for i in range(len(parts))], len(parts)), "part int")
    raw = tasks.mapInArrow(partials_reader(parts, endpoint, encoding), PARTIALS_SCHEMA).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    kind = F.col("kind")
    # The cleaning report: one line of counts per part.
    counts = [json.loads(r[0]) for r in raw.filter(kind == SUMMARY).select("value").collect()]
    report = CleaningReport(
        rows_read=sum(c["rows_read"] for c in counts),
        dropped={r: sum(c["dropped"][i] for c in counts) for i, r in enumerate(REASONS)},
    )
    report.rows_kept = report.rows_read - sum(report.dropped.values())
    check_cleaned(report, name)
    priced = any(c["priced"] for c in counts)

    blocks = raw.filter(kind == BLOCK).select("block")
    pairs = pairs_frame(blocks)  # rows made from the blocks only when read
    pieces = raw.filter(kind == BASKET)
    cached: list = [raw]
    # Baskets in more than one part (a count per basket: no sorting); none when there is one part.
    spanning = pieces.groupBy("invoice").count().filter(F.col("count") > 1).select("invoice")
    n_spanning = spanning.count() if len(parts) > 1 else 0
    if not n_spanning:
        # Each basket whole in one part: its part's figures are final, nothing to merge.
        merged = pieces.select("invoice", F.col("at").alias("first"), "time", "size", F.col("value").alias("customer"))
    else:
        # A basket in several parts: its pairs merged (first row, distinct items), its figures and size too.
        if n_spanning <= SPANNING_BROADCAST:
            across = F.broadcast(spanning)
            pairs = pairs.join(across, "invoice", "left_anti").unionByName(
                pairs.join(across, "invoice").groupBy("invoice", "code").agg(F.min("at").alias("at"))
            )
        else:
            pairs = pairs.groupBy("invoice", "code").agg(F.min("at").alias("at"))
        pairs = pairs.persist(StorageLevel.MEMORY_AND_DISK)
        merged = (
            pieces.groupBy("invoice")
            .agg(
                F.min("at").alias("first"),
                F.min("time").alias("time"),
                F.max_by("value", "value_at").alias("customer"),
            )
            .join(pairs.groupBy("invoice").agg(F.count("*").alias("size")), "invoice")
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        cached += [pairs, merged]
        blocks = None  # the matrix is built from the merged pairs (distributed_rows)
    baskets = merged.select("invoice", "first", "time", "size")
    basket_customer = merged.filter(F.col("customer").isNotNull()).select("invoice", "customer")
    latest_description = F.when(F.col("value").isNotNull(), F.struct("value_time", "value_at"))
    latest_price = F.when(F.col("price").isNotNull(), F.struct("price_time", "price_at"))
    described = (
        raw.filter(kind == ITEM)
        .groupBy("code")
        .agg(
            F.max_by("value", latest_description).alias("description"),
            F.max_by("price", latest_price).alias("price"),
        )
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    cached.append(described)
    report.baskets = merged.count()
    report.guest_baskets = report.baskets - basket_customer.count()
    report.customers = raw.filter(kind == CUSTOMER).select("value").distinct().count()
    report.items = described.count()
    return Input(report, pairs, baskets, basket_customer, described, priced, tuple(cached), blocks)
