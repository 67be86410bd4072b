"""The Spark engine's pairs as blocks: each part's distinct (basket, item) pairs as CSR over its own codebooks, one
opaque value per part, from which the executors build the items' figures and the matrix rows in numpy.

A part's block (made where the part is read, distributed_read) holds its baskets' invoices, its items' codes and
customers' ids once, and its pairs as numbers: for each basket (in first-appearance order) its items' local numbers
and each pair's first row. Spark never sees a pair as a row: the items are merged from one line per item and part,
the global item order is broadcast back, and each executor renumbers its block into matrix rows. Customers' histories
span parts: each part sends its customers' (item, baskets) counts to a partition chosen by a stable hash of the
customer's id, which merges them and keeps each returning customer's most bought items. Used when no basket spans
parts (distributed_read checks); a basket cut across parts is merged from pairs as rows instead (distributed_rows).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

# Pairs per block, about: a part with more is sent as several blocks (each with its own baskets and the part's
# codebooks), so that no value nears the 2 GB a JVM byte array or an Arrow binary column holds (12 bytes a pair).
BLOCK_PAIRS = 8_000_000
BATCH_PAIRS = 500_000  # pairs per Arrow batch when they are made rows


def encode(
    invoices: np.ndarray,
    codes: np.ndarray,
    customers: np.ndarray,
    pair_basket: np.ndarray,
    pair_item: np.ndarray,
    pair_at: np.ndarray,
    basket_customer: np.ndarray,
    block_pairs: int = BLOCK_PAIRS,
) -> list[bytes]:
    """A part's blocks: pairs sorted by basket (numbers into invoices and codes), each pair's first row, each
    basket's customer (a number into customers, -1 for none); its baskets cut into blocks of about block_pairs pairs
    (a block starts with each basket that holds a multiple of block_pairs, counting pairs from 0)."""
    ends = np.zeros(len(invoices) + 1, dtype=np.int64)
    np.cumsum(np.bincount(pair_basket, minlength=len(invoices)), out=ends[1:])
    cuts = np.unique(np.searchsorted(ends, np.arange(0, ends[-1], block_pairs), side="right") - 1)
    cuts = np.append(cuts, len(invoices))
    blocks = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        block = {
            "invoices": invoices[lo:hi],
            "codes": codes,
            "customers": customers,
            "indptr": ends[lo : hi + 1] - ends[lo],
            "items": pair_item[ends[lo] : ends[hi]].astype(np.int32),
            "at": pair_at[ends[lo] : ends[hi]].astype(np.int64),
            "basket_customer": basket_customer[lo:hi].astype(np.int64),
        }
        blocks.append(pickle.dumps(block, protocol=5))
    return blocks


def decode(blob: bytes | bytearray) -> dict[str, np.ndarray]:
    """A block's arrays (encode's)."""
    return pickle.loads(blob)


def _kept(block: dict[str, np.ndarray], excluded: np.ndarray) -> np.ndarray:
    """Which of the block's baskets a model learns from: all but the excluded invoices."""
    if not len(excluded):
        return np.ones(len(block["invoices"]), dtype=bool)
    return ~pd.Index(block["invoices"]).isin(excluded)


def _blobs(rows: Iterator[Any]) -> Iterator[dict[str, np.ndarray]]:
    for row in rows:
        yield decode(row[0])


def pairs_frame(blocks: Any, only: list[str] | None = None) -> Any:
    """The blocks' pairs as rows (invoice, code, at), made on the executors when read: all of them, or only the given
    invoices' (filtered before they reach the JVM)."""
    import pyarrow as pa

    wanted = None if only is None else np.asarray(only, dtype=object)

    def explode(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            for blob in batch.column(0).to_pylist():
                block = decode(blob)
                lengths = np.diff(block["indptr"])
                basket = np.repeat(np.arange(len(lengths)), lengths)
                if wanted is not None:
                    chosen = pd.Index(block["invoices"]).isin(wanted)
                    keep = chosen[basket]
                    basket = basket[keep]
                    items, at = block["items"][keep], block["at"][keep]
                else:
                    items, at = block["items"], block["at"]
                for start in range(0, len(basket), BATCH_PAIRS):
                    end = start + BATCH_PAIRS
                    yield pa.RecordBatch.from_pydict(
                        {
                            "invoice": pa.array(block["invoices"][basket[start:end]], type=pa.string()),
                            "code": pa.array(block["codes"][items[start:end]], type=pa.string()),
                            "at": pa.array(at[start:end], type=pa.int64()),
                        }
                    )

    return blocks.mapInArrow(explode, "invoice string, code string, at long")


def _figures(block: dict[str, np.ndarray], excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One block's items (codes seen), their first row and popularity over the block's kept baskets."""
    lengths = np.diff(block["indptr"])
    keep = np.repeat(_kept(block, excluded), lengths)
    items, at = block["items"][keep], block["at"][keep]
    n = len(block["codes"])
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, items, at)
    popularity = np.bincount(items, minlength=n)
    seen = popularity > 0
    return block["codes"][seen], first[seen], popularity[seen]


def _merged_figures(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """The blocks' figures merged: each item's first row (the least) and popularity (the sum)."""
    frame = pd.DataFrame(
        {
            "code": np.concatenate([p[0] for p in parts]) if parts else np.empty(0, dtype=object),
            "first": np.concatenate([p[1] for p in parts]) if parts else np.empty(0, dtype=np.int64),
            "popularity": np.concatenate([p[2] for p in parts]) if parts else np.empty(0, dtype=np.int64),
        }
    )
    return frame.groupby("code", sort=False).agg(first=("first", "min"), popularity=("popularity", "sum")).reset_index()


def item_figures(blocks: Any, excluded: np.ndarray) -> pd.DataFrame:
    """Each item's first row and popularity (the baskets holding it) over the kept baskets: one line per item and
    part from the executors, merged on the driver."""

    def figures(rows: Iterator[Any]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for block in _blobs(rows):
            yield _figures(block, excluded)

    return _merged_figures(blocks.rdd.mapPartitions(figures).collect())


def gather(blocks: Any, exclusions: list[np.ndarray], wanted: list[str]) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """One pass over the blocks for what item_figures and pairs_frame(blocks, wanted) give: the items' figures for
    each set of excluded invoices, and the wanted invoices' pairs (invoice, code, at) as a pandas frame."""
    chosen = np.asarray(wanted, dtype=object)

    def pick(rows: Iterator[Any]) -> Iterator[tuple[list, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        for block in _blobs(rows):
            lengths = np.diff(block["indptr"])
            keep = np.repeat(pd.Index(block["invoices"]).isin(chosen), lengths)
            basket = np.repeat(np.arange(len(lengths)), lengths)[keep]
            pairs = (block["invoices"][basket], block["codes"][block["items"][keep]], block["at"][keep])
            yield [_figures(block, excluded) for excluded in exclusions], pairs

    parts = blocks.rdd.mapPartitions(pick).collect()
    figures = [_merged_figures([p[0][i] for p in parts]) for i in range(len(exclusions))]
    pairs = pd.DataFrame(
        {
            "invoice": np.concatenate([p[1][0] for p in parts]) if parts else np.empty(0, dtype=object),
            "code": np.concatenate([p[1][1] for p in parts]) if parts else np.empty(0, dtype=object),
            "at": np.concatenate([p[1][2] for p in parts]) if parts else np.empty(0, dtype=np.int64),
        }
    )
    return figures, pairs


def matrix_rows(
    blocks: Any, codes: list[str], excluded: np.ndarray, n_parts: int, min_baskets: int, max_items: int
) -> tuple[Any, Any]:
    """The matrix rows as an RDD of (indptr, indices, is_basket) blocks in n_parts partitions: each kept basket's
    items (numbers in codes, sorted), and each returning customer's (at least min_baskets baskets) max_items most
    bought items (ties: lower number first); with the broadcast codes, to release once the RDD is no longer read."""
    sc = blocks.rdd.context
    codes_b = sc.broadcast(np.asarray(codes, dtype=object))

    def spread(index: int, rows: Iterator[Any]) -> Iterator[tuple[int, tuple]]:
        """A part's baskets cut into n_parts pieces, and its customers' counts, each keyed by its partition."""
        where = pd.Index(codes_b.value)
        for block in _blobs(rows):
            kept = _kept(block, excluded)
            lengths = np.diff(block["indptr"])
            keep = np.repeat(kept, lengths)
            basket = np.repeat(np.arange(len(lengths)), lengths)[keep]
            item = where.get_indexer(block["codes"]).astype(np.int32)[block["items"][keep]]
            order = np.lexsort((item, basket))
            item = item[order]  # each basket's items sorted by their global number
            sizes = lengths[kept]
            bounds = np.linspace(0, len(sizes), n_parts + 1).astype(np.int64)
            ends = np.concatenate([[0], np.cumsum(sizes)])
            for j in range(n_parts):
                lo, hi = bounds[j], bounds[j + 1]
                if hi > lo:
                    indptr = ends[lo : hi + 1] - ends[lo]
                    yield (index + j) % n_parts, ("baskets", indptr, item[ends[lo] : ends[hi]])
            yield from _customer_counts(block, kept, basket[order], item, n_parts)

    def merge(records: Iterator[tuple[int, tuple]]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """This partition's basket pieces as they are, and its customers' counts merged into their rows."""
        indptrs, indices, customers = [], [], []
        for _key, record in records:
            if record[0] == "baskets":
                indptrs.append(np.diff(record[1]))
                indices.append(record[2])
            else:
                customers.append(record[1:])
        n_baskets = sum(len(p) for p in indptrs)
        sizes, items = _customer_rows(customers, min_baskets, max_items)
        lengths = np.concatenate([*indptrs, sizes]).astype(np.int64)
        if not len(lengths):
            return
        indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        is_basket = np.zeros(len(lengths), dtype=bool)
        is_basket[:n_baskets] = True
        yield indptr, np.concatenate([*indices, items]).astype(np.int32), is_basket

    return (
        blocks.rdd.mapPartitionsWithIndex(spread)
        .partitionBy(n_parts, lambda key: key)
        .mapPartitions(merge, preservesPartitioning=True)
    ), codes_b


def _customer_counts(
    block: dict[str, np.ndarray], kept: np.ndarray, basket: np.ndarray, item: np.ndarray, n_parts: int
) -> Iterator[tuple[int, tuple]]:
    """A part's customers' (item, baskets holding it) counts and basket counts, each sent to the partition of a
    stable hash of the customer's id (the same in every part and worker)."""
    owner = block["basket_customer"]
    named = kept & (owner >= 0)
    if not named.any():
        return
    baskets_of = np.bincount(owner[named], minlength=len(block["customers"]))
    customer = owner[basket]
    mine = customer >= 0
    key, n = np.unique(customer[mine].astype(np.int64) << 32 | item[mine].astype(np.int64), return_counts=True)
    pair_customer, pair_item = key >> 32, (key & 0xFFFFFFFF).astype(np.int32)
    present = np.flatnonzero(baskets_of)
    bucket = (pd.util.hash_array(block["customers"][present].astype(object)) % np.uint64(n_parts)).astype(np.int64)
    by_bucket = np.full(len(block["customers"]), -1, dtype=np.int64)
    by_bucket[present] = bucket
    local = np.zeros(len(block["customers"]), dtype=np.int64)
    for b in np.unique(bucket):
        ids = present[bucket == b]
        local[ids] = np.arange(len(ids))
        sel = by_bucket[pair_customer] == b
        yield (
            int(b),
            ("customers", block["customers"][ids], baskets_of[ids], local[pair_customer[sel]], pair_item[sel], n[sel]),
        )


def _customer_rows(pieces: list[tuple], min_baskets: int, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The customers' pieces of one partition merged: each returning customer's row (sizes, then items)."""
    if not pieces:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int32)
    names = np.concatenate([p[0] for p in pieces])
    number, unique = pd.factorize(names)
    offsets = np.cumsum([0] + [len(p[0]) for p in pieces[:-1]])
    baskets = np.bincount(number, weights=np.concatenate([p[1] for p in pieces]), minlength=len(unique))
    customer = np.concatenate([number[o + p[2]] for o, p in zip(offsets, pieces)]).astype(np.int64)
    item = np.concatenate([p[3] for p in pieces]).astype(np.int64)
    key, inverse = np.unique(customer << 32 | item, return_inverse=True)
    n = np.bincount(inverse, weights=np.concatenate([p[4] for p in pieces]).astype(np.float64))
    customer, item = key >> 32, key & 0xFFFFFFFF
    returning = baskets[customer] >= min_baskets
    customer, item, n = customer[returning], item[returning], n[returning]
    order = np.lexsort((item, -n, customer))  # most bought first, ties by the lower item number
    customer, item = customer[order], item[order]
    rank = np.arange(len(customer)) - np.searchsorted(customer, customer)
    top = rank < max_items
    customer, item = customer[top], item[top]
    order = np.lexsort((item, customer))
    customer, item = customer[order], item[order]
    _, sizes = np.unique(customer, return_counts=True)
    return sizes.astype(np.int64), item.astype(np.int32)
