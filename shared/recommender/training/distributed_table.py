"""The Spark engine's item-item table: each item's top-K neighbours and ridge weights, computed on the executors.

The co-occurrence matrix G = X'X is never stored: at 100M input rows and 100k items it holds billions of entries.
Its rows are owned by blocks of items instead. Every matrix row is sent once to each block whose items it holds, so
a block's task computes exactly its rows of G (a slice at a time) from the rows it received; the shuffle is bounded
by the matrix times the blocks a row touches, not by partitions times the gram. Two passes over the same shuffled
rows (Spark keeps the shuffle files): the first finds each item's neighbours (neighbors.top_neighbors); the second
sends the pieces of every target's ridge system, its right-hand side and its baskets' counts to the target's block,
where the systems are assembled as the pieces stream in and solved (neighbors.solve_ridge). Only items x K arrays
reach the driver. The arithmetic is the single-machine trainer's, so the table is the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from recommender.training import neighbors

Progress = Callable[[str], None]
PairCounts = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (indptr, target) by source -> baskets per entry
GRAM_BLOCK = 4096  # items whose co-occurrence rows one task owns (a matrix row goes to each block it touches)
TARGET_BLOCK = 2048  # targets whose ridge systems are solved together (2048 x 100 x 100 float32: 82 MB)
DENSE_BYTES = 1 << 28  # a dense slice of co-occurrence rows computed at once (256 MB)


def one_blas_thread() -> None:
    """One BLAS thread in this Python worker, as in the single-machine trainer (many small dense problems; and
    several tasks already share the cores)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def row_matrix(block: tuple[np.ndarray, ...], n_items: int, values: np.ndarray | None = None, dtype=np.float32):
    """Matrix rows given as (indptr, indices, ...) as CSR over n_items columns: ones, or each column's value."""
    import scipy.sparse as sp

    indptr, indices = block[0], block[1]
    data = np.ones(len(indices), dtype=dtype) if values is None else values[indices]
    return sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_items))


def _narrow(counts: np.ndarray) -> np.ndarray:
    """Co-occurrence counts (float32 holding integers) as uint16 when they all fit: half the bytes to pickle and
    shuffle, and the same float32 values once written into the system."""
    return counts.astype(np.uint16) if counts.size and counts.max() < 2**16 else counts


def item_item_table(
    sc: Any, matrix: Any, counts: np.ndarray, n_items: int, k: int, lam: float, progress: Progress
) -> tuple[np.ndarray, np.ndarray, PairCounts]:
    """Top-k neighbours and ridge weights of every item (items x k each) from the matrix rows (an RDD of
    (indptr, indices, is_basket) partitions); and how to count each table entry's baskets once the table is laid
    out by source."""
    size = GRAM_BLOCK  # read on the driver; the closures below carry it to the executors
    dense_bytes, target_block = DENSE_BYTES, TARGET_BLOCK
    n_blocks = -(-n_items // size)
    n_targets = -(-n_items // target_block)
    counts_b = sc.broadcast(counts)

    def route(part: tuple[np.ndarray, ...]) -> Iterator[tuple[int, tuple]]:
        """This partition's rows, each sent to every block of items it holds (with whether it is a basket)."""
        indptr, indices, basket = part
        lengths = np.diff(indptr)
        n_rows = len(lengths)
        if not n_rows:
            return
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
        touched = np.unique((indices // size).astype(np.int64) * n_rows + rows)  # by block, then row
        bounds = np.searchsorted(touched, np.arange(n_blocks + 1, dtype=np.int64) * n_rows)
        for b in np.flatnonzero(np.diff(bounds)):
            chosen = touched[bounds[b] : bounds[b + 1]] - b * n_rows
            keep = np.zeros(n_rows, dtype=bool)
            keep[chosen] = True
            sub = np.zeros(len(chosen) + 1, dtype=np.int64)
            np.cumsum(lengths[chosen], out=sub[1:])
            yield int(b), (sub, indices[np.repeat(keep, lengths)], basket[chosen])

    # A block's rows live in partition b: both passes read them from the same shuffle files.
    routed = matrix.flatMap(route).partitionBy(n_blocks, lambda b: b)

    def owned(records: Iterator[tuple[int, tuple]]) -> Iterator[tuple[int, Any, np.ndarray]]:
        """Each block of this partition with its rows stacked: (block, X as float32 CSR, which rows are baskets)."""
        chunks: dict[int, list[tuple]] = {}
        for b, chunk in records:
            chunks.setdefault(b, []).append(chunk)
        while chunks:
            b, parts = chunks.popitem()
            lengths = np.concatenate([np.diff(p[0]) for p in parts])
            indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=indptr[1:])
            indices = np.concatenate([p[1] for p in parts])
            basket = np.concatenate([p[2] for p in parts])
            del parts
            yield b, row_matrix((indptr, indices), n_items), basket

    def slices(b: int, x: Any) -> Iterator[neighbors.Gram]:
        """The block's rows of X'X, a slice of items at a time (a slice dense would stay within DENSE_BYTES)."""
        lo, hi = b * size, min(n_items, (b + 1) * size)
        xt = x[:, lo:hi].T.tocsr()
        step = max(1, min(hi - lo, dense_bytes // (4 * (n_items + 1))))
        for s0 in range(0, hi - lo, step):
            part = (xt[s0 : s0 + step] @ x).tocsr()
            yield neighbors.Gram(
                part.indptr.astype(np.int64),
                part.indices.astype(np.int32, copy=False),
                part.data.astype(np.float32, copy=False),
                counts_b.value,
                start=lo + s0,
            )

    def find_neighbors(records: Iterator[tuple[int, tuple]]) -> Iterator[tuple[int, np.ndarray]]:
        one_blas_thread()
        for b, x, _basket in owned(records):
            for g in slices(b, x):
                yield g.start, neighbors.top_neighbors(g, k)

    started = time.perf_counter()
    table_index = np.full((n_items, k), -1, dtype=np.int32)
    for start, block in routed.mapPartitions(find_neighbors).collect():
        table_index[start : start + len(block)] = block
    progress(f"  neighbours: {n_blocks} block(s) of {size:,} items ({time.perf_counter() - started:.1f} s)")

    nbrs_b = sc.broadcast(table_index)
    # Every (target, position) of the table sorted by its neighbour: a slice of source rows finds the targets that
    # need it with two binary searches.
    flat = table_index.ravel()
    by_source = np.argsort(flat, kind="stable")
    by_source_b = sc.broadcast((by_source, flat[by_source]))

    def dense(g: neighbors.Gram, buffers: list[np.ndarray], which: int) -> np.ndarray:
        """The slice's rows as a dense array with one extra zero column (where padded neighbours point), written
        into the task's buffer `which` (reused from slice to slice: a fresh 256 MB array a slice cost more in page
        faults and zeroing than the scatter itself; what is read from it is copied)."""
        rows = g.shape[0]
        if len(buffers) <= which:
            buffers.append(np.zeros((rows, n_items + 1), dtype=np.float32))
        elif buffers[which].shape[0] < rows:
            buffers[which] = np.zeros((rows, n_items + 1), dtype=np.float32)
        out = buffers[which][:rows]
        out.fill(0)
        flat = np.repeat(np.arange(rows, dtype=np.int64) * (n_items + 1), np.diff(g.indptr)) + g.indices
        out.reshape(-1)[flat] = g.data
        return out

    def pieces(records: Iterator[tuple[int, tuple]]) -> Iterator[tuple[int, tuple]]:
        """For each slice of co-occurrence rows: every row a target's system needs (G[a, N(c)] for a in N(c)), the
        baskets holding both a and c, and the right-hand sides G[c, N(c)] of its own targets, each sent to the
        target's block."""
        one_blas_thread()
        nbrs = nbrs_b.value
        order, sources = by_source_b.value
        padded = np.where(nbrs >= 0, nbrs, n_items)
        buffers: list[np.ndarray] = []
        for b, x, basket in owned(records):
            # The rows' co-occurrence is the baskets' plus the customers' histories': each computed once (the
            # baskets' alone is the reasons' counts), then added; exact, as every entry is a count (an integer).
            baskets_only, customers_only = x[basket], x[~basket]
            del x
            for gb, gc in zip(slices(b, baskets_only), slices(b, customers_only)):
                lo, hi = gb.start, gb.start + gb.shape[0]
                in_baskets, together = dense(gb, buffers, 0), dense(gc, buffers, 1)
                together += in_baskets
                entries = np.sort(order[np.searchsorted(sources, lo) : np.searchsorted(sources, hi)])  # by target
                target, position = entries // k, entries % k
                source = nbrs[target, position] - lo
                bounds = np.searchsorted(target, np.arange(0, n_items + target_block, target_block))
                for t in np.flatnonzero(np.diff(bounds)):
                    ts, ps, ss = (a[bounds[t] : bounds[t + 1]] for a in (target, position, source))
                    yield int(t), ("system", ts, ps, _narrow(together[ss[:, None], padded[ts]]))
                    yield int(t), ("count", ts, ps, in_baskets[ss, ts].astype(np.int32))
                own = np.arange(lo, hi)
                for t in np.unique(own // target_block):
                    cs = own[(own // target_block) == t]
                    yield int(t), ("rhs", cs, None, together[(cs - lo)[:, None], padded[cs]])
            del baskets_only, customers_only

    def solve(records: Iterator[tuple[int, tuple]]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """The systems of this partition's target blocks, filled as their pieces arrive, then solved."""
        one_blas_thread()
        nbrs = nbrs_b.value
        held: dict[int, tuple[np.ndarray, ...]] = {}
        for t, (kind, cs, ps, values) in records:
            if t not in held:
                rows = min(n_items, (t + 1) * target_block) - t * target_block
                held[t] = (
                    np.zeros((rows, k, k), dtype=np.float32),
                    np.zeros((rows, k), dtype=np.float32),
                    np.zeros((rows, k), dtype=np.int32),
                )
            systems, rhs, together = held[t]
            at = cs - t * target_block
            if kind == "system":
                systems[at, ps, :] = values
            elif kind == "count":
                together[at, ps] = values
            else:
                rhs[at] = values
        for t, (systems, rhs, together) in held.items():
            start = t * target_block
            valid = nbrs[start : start + len(rhs)] >= 0
            yield t, neighbors.solve_ridge(systems, rhs, valid, lam), together

    started = time.perf_counter()
    table_weight = np.zeros((n_items, k), dtype=np.float32)
    entry_counts = np.zeros((n_items, k), dtype=np.int32)  # baskets holding both the target and the neighbour
    solved = routed.mapPartitions(pieces).partitionBy(n_targets, lambda t: t).mapPartitions(solve)
    for t, weights, together in solved.collect():
        table_weight[t * target_block : t * target_block + len(weights)] = weights
        entry_counts[t * target_block : t * target_block + len(weights)] = together
    progress(
        f"  ridge systems: {n_targets} block(s) of {target_block:,} targets ({time.perf_counter() - started:.1f} s)"
    )
    for broadcast in (nbrs_b, by_source_b, counts_b):
        broadcast.unpersist()

    def pair_counts(indptr: np.ndarray, target: np.ndarray) -> np.ndarray:
        """neighbors.table_counts from the counts kept per (target, position): the table by source holds the same
        pairs, and a co-occurrence count is symmetric."""
        valid = table_index >= 0
        keys = (np.arange(n_items, dtype=np.int64)[:, None] * n_items + table_index)[valid]
        order = np.argsort(keys)
        source = np.repeat(np.arange(n_items, dtype=np.int64), np.diff(indptr))
        found = order[np.searchsorted(keys[order], target.astype(np.int64) * n_items + source)]
        return entry_counts[valid][found]

    return table_index, table_weight, pair_counts
