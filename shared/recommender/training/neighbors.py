"""The item-item table that re-ranks Annoy's candidates: EASE's regression, restricted to each item's top-K neighbours.

For every target item c, with N(c) its K most co-purchased items by cosine, the weights solve the ridge
regression of c's column on its neighbours' columns:

    w_c = (G[N, N] + lambda I)^-1 G[N, c],        G = X'X (co-purchase counts)

which is what EASE (Steck 2019) computes with all items as neighbours; keeping K makes the cost n * K^3 and
the table n * K entries, so it scales to item counts where a dense n x n model cannot. It is solved by target (row c:
N(c) and w_c) and stored by source (row i: every c with i in N(c), and the weight), so that a basket's scores are
the sum of its items' rows: work in proportion to the basket, not to the number of items. Everything here is sparse or
bounded by K.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

# At import, not in solve_ridge: the command imports training while a workbook's parse runs on the other core
# (xlsx.prefetch), which hides this import (some 0.03 s); at the first ridge solve it came after the parse.
from scipy.linalg.lapack import sposv


@dataclass
class Gram:
    """X'X for a binary X, as CSR arrays (columns within a row in no particular order: nothing here needs them
    sorted, and sorting cost more than the product), with its diagonal: how many rows hold each item."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    counts: np.ndarray
    start: int = 0  # a block of rows (the Spark engine's unit of work): row r here is item start + r

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.indptr) - 1, len(self.counts)


def gram(matrix: sp.csr_matrix, block: int = 4096) -> Gram:
    """X'X (items x items co-purchase counts) of a binary matrix, a block of item rows at a time.

    Each block is moved into the final arrays and freed as soon as it is copied, so the peak is about the
    result plus one block: scipy's own stacking would hold every block twice (gigabytes at 100k items).
    """
    n = matrix.shape[1]
    xt = matrix.T.tocsr().astype(np.float32)
    x = matrix.tocsr().astype(np.float32)
    blocks = []
    for start in range(0, n, block):
        part = (xt[start : start + block] @ x).tocsr()
        blocks.append((part.indptr.astype(np.int64), part.indices.astype(np.int32), part.data.astype(np.float32)))
        del part
    del xt
    nnz = sum(len(b[2]) for b in blocks)
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(nnz, dtype=np.int32)
    data = np.empty(nnz, dtype=np.float32)
    offset = row = 0
    blocks.reverse()
    while blocks:
        ptr, idx, val = blocks.pop()
        rows = len(ptr) - 1
        indptr[row + 1 : row + rows + 1] = ptr[1:] + offset
        indices[offset : offset + len(idx)] = idx
        data[offset : offset + len(val)] = val
        offset += len(val)
        row += rows
    counts = np.bincount(x.indices, minlength=n).astype(np.float64)  # binary X: the diagonal of X'X
    return Gram(indptr, indices, data, counts)


def combine(a: Gram, b: Gram) -> Gram:
    """The gram of two stacked matrices over the same items (baskets and customer histories) from their own grams:
    X'X + Y'Y, exact (counts in float32 up to 2^24)."""
    shape = a.shape
    total = sp.csr_matrix((a.data, a.indices, a.indptr), shape=shape) + sp.csr_matrix(
        (b.data, b.indices, b.indptr), shape=shape
    )
    return Gram(
        total.indptr.astype(np.int64),
        total.indices.astype(np.int32),
        total.data.astype(np.float32),
        a.counts + b.counts,
        a.start,
    )


def top_neighbors(g: Gram, k: int) -> np.ndarray:
    """Per item (of the block g holds), its k most similar other items by cosine of co-purchase (ties: lower row
    first); -1 pads."""
    n = g.shape[0]
    root = np.sqrt(np.where(g.counts > 0, g.counts, 1.0))
    out = np.full((n, k), -1, dtype=np.int32)
    for r in range(n):
        j = g.start + r
        lo, hi = g.indptr[r], g.indptr[r + 1]
        cols = g.indices[lo:hi]
        keep = cols != j
        cols = cols[keep]
        if not len(cols):
            continue
        sims = g.data[lo:hi][keep] / (root[j] * root[cols])
        if len(cols) > k:
            top = np.argpartition(-sims, k - 1)[:k]
            # widen to every item tied with the k-th, so the final cut below is by row number, not by chance
            top = np.flatnonzero(sims >= sims[top].min())
        else:
            top = np.arange(len(cols))
        chosen = top[np.lexsort((cols[top], -sims[top]))][:k]
        out[r, : len(chosen)] = cols[chosen]
    return out


def local_regression(
    g: Gram, nbrs: np.ndarray, lam: float, batch: int = 8192, progress: Callable[[int], None] = lambda _n: None
) -> np.ndarray:
    """Ridge weights (n x K, aligned with nbrs) of each item's column on its neighbours' columns."""
    n, k = nbrs.shape
    valid = nbrs >= 0
    padded = np.where(valid, nbrs, n)  # row n of the scatter buffer stays zero
    weights = np.zeros((n, k), dtype=np.float32)
    row = np.zeros(n + 1, dtype=np.float32)
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        systems = np.zeros((stop - start, k, k), dtype=np.float32)
        # Fill G[N(c), N(c)] for every target c of the batch: each source row a of G is scattered into a dense
        # buffer once and read for every (target, position) that has a as a neighbour.
        target, position = np.nonzero(valid[start:stop])
        source = nbrs[start:stop][target, position]
        order = np.argsort(source, kind="stable")
        source, target, position = source[order], target[order], position[order]
        bounds = np.searchsorted(source, np.arange(n + 1))
        for a in np.unique(source):
            lo, hi = g.indptr[a], g.indptr[a + 1]
            row[g.indices[lo:hi]] = g.data[lo:hi]
            r0, r1 = bounds[a], bounds[a + 1]
            systems[target[r0:r1], position[r0:r1], :] = row[padded[start + target[r0:r1]]]
            row[g.indices[lo:hi]] = 0.0
        rhs = np.zeros((stop - start, k), dtype=np.float32)
        for t, c in enumerate(range(start, stop)):
            lo, hi = g.indptr[c], g.indptr[c + 1]
            row[g.indices[lo:hi]] = g.data[lo:hi]
            rhs[t] = row[padded[c]]
            row[g.indices[lo:hi]] = 0.0
        weights[start:stop] = solve_ridge(systems, rhs, valid[start:stop], lam)
        progress(stop - start)
    return weights


def solve_ridge(systems: np.ndarray, rhs: np.ndarray, valid: np.ndarray, lam: float) -> np.ndarray:
    """The weights w_c = (G[N,N] + lambda I)^-1 G[N,c] of a batch of targets, from their systems G[N,N] (float32,
    b x K x K, filled in place), right-hand sides G[N,c] (b x K) and valid slots (b x K); both engines call it."""
    diag = np.arange(systems.shape[1])
    systems[:, diag, diag] += lam + ~valid  # a padded slot becomes an identity row with a zero right-hand side
    # Each system is symmetric positive definite: LAPACK's Cholesky solve, one system at a time, is several times
    # faster than numpy's batched LU solve (half the flops, no copies); numpy's is the fallback for a system that
    # rounding made indefinite.
    weights = np.empty_like(rhs)
    for t in range(len(systems)):
        _factor, weights[t], info = sposv(systems[t], rhs[t], lower=1)
        if info:
            weights[t] = np.linalg.solve(systems[t], rhs[t])
    return weights * valid


def by_source(nbrs: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The target-major table (row c: sources N(c), weights w_c) as CSR by source: indptr, targets, weights."""
    n = len(nbrs)
    ok = (nbrs >= 0) & (weights != 0)
    source = nbrs[ok].astype(np.int64)
    target = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None], nbrs.shape)[ok]
    # by source, then target: the targets ascend already (row by row), so a stable sort by source is enough, a radix
    # sort when the item numbers fit in 16 bits (four times faster than sorting the two keys)
    order = np.argsort(source.astype(np.uint16) if n <= 2**16 else source, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(source, minlength=n), out=indptr[1:])
    return indptr, target[order].astype(np.int32), weights[ok][order].astype(np.float32)


def table_counts(baskets: sp.csr_matrix, indptr: np.ndarray, target: np.ndarray, block: int = 4096) -> np.ndarray:
    """For each entry of the by-source table (indptr, target), how many rows of baskets hold both its source and its
    target item: int32, aligned with target (the `baskets` a recommendation's reasons show).

    baskets is the binary invoices x items matrix (no customer-history rows). The co-purchase counts are computed
    a block of source items at a time and only the table's entries are kept, so memory stays at one block.
    Equal to counts_from_gram(gram(baskets), indptr, target), which holds the whole gram at once.
    """
    n = baskets.shape[1]
    x = baskets.tocsr().astype(np.float32)  # float32 sums of ones are exact up to 2^24 baskets
    xt = x.T.tocsr()
    counts = np.zeros(len(target), dtype=np.int32)
    for start in range(0, n, block):
        stop = min(n, start + block)
        if indptr[start] == indptr[stop]:
            continue
        part = (xt[start:stop] @ x).tocsr()
        _gather(part.indptr, part.indices, part.data, indptr, target, start, stop, counts, n)
    return counts


def counts_from_gram(g: Gram, indptr: np.ndarray, target: np.ndarray) -> np.ndarray:
    """table_counts from a basket gram computed beforehand (training computes it beside the item-item table); g and
    indptr may be a block of sources (Spark's unit of work), target holds item rows of the whole model."""
    counts = np.zeros(len(target), dtype=np.int32)
    _gather(g.indptr, g.indices, g.data, indptr, target, 0, len(indptr) - 1, counts, g.shape[1])
    return counts


def _gather(
    g_indptr: np.ndarray,
    g_indices: np.ndarray,
    g_data: np.ndarray,
    indptr: np.ndarray,
    target: np.ndarray,
    start: int,
    stop: int,
    out: np.ndarray,
    n_items: int,
) -> None:
    """out[e] = gram[source(e), target(e)] for the table entries of sources start..stop-1 (gram rows from start);
    the gram's columns and the targets are item rows of a model of n_items."""
    row = np.zeros(n_items, dtype=np.float32)
    for s in range(start, stop):
        lo, hi = indptr[s], indptr[s + 1]
        if lo == hi:
            continue
        a, b = g_indptr[s - start], g_indptr[s - start + 1]
        row[g_indices[a:b]] = g_data[a:b]
        out[lo:hi] = row[target[lo:hi]]
        row[g_indices[a:b]] = 0.0
