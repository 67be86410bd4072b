"""The item-item table (training/neighbors.py) computed over a dense co-occurrence matrix, for catalogues small
enough to hold it (DENSE_MAX_ITEMS): the same neighbours, weights and counts, bit for bit, in a fraction of the time.

The sparse path scatters each gram row into a buffer once per use, a Python loop per item; with the whole gram as
one n x n array every step is a vectorised gather. Counts are exact in float32 (integers up to 2^24), so any way of
summing them gives the same array, and each later step does the same float operations on the same values as the
sparse path: the similarities are the same float64 quotients, the ridge systems the same float32 matrices solved by
the same LAPACK call (neighbors.solve_ridge), one system at a time. A grams' sum is also exact, which is what lets the
published model and the holdout model share their co-occurrence (training/paired.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

try:  # private, but scipy's own kernels for a decade (what X.T @ X and toarray run)
    from scipy.sparse._sparsetools import csr_matmat as _csr_matmat
    from scipy.sparse._sparsetools import csr_todense as _csr_todense
except ImportError:  # pragma: no cover
    _csr_matmat = _csr_todense = None

from recommender.training import neighbors

# Up to this many items the gram is held dense: n^2 float32 (64 MB at 4,000 items, 144 MB at the bound) plus one
# block of similarities; above it, the sparse path (neighbors.py), whose memory follows the co-purchases.
DENSE_MAX_ITEMS = 6000


def gram(matrix: sp.csr_matrix) -> np.ndarray:
    """X'X (items x items co-purchase counts, float32) of a rows x items matrix, dense."""
    out = np.zeros((matrix.shape[1],) * 2, dtype=np.float32)
    add(out, product(matrix))
    return out


def product(matrix: sp.csr_matrix | None) -> sp.csr_matrix | None:
    """X'X of a rows x items matrix, sparse float32 (None without rows).

    scipy's X.T @ X first runs a pass over every pair of items of every row only to size its output, a third of
    the product's time; here the output gets the most it can need (items^2 or the rows' pairs, whichever is fewer)
    as arrays whose untouched pages never take memory, and one pass fills them: the same kernel, the same sums."""
    if matrix is None or not matrix.shape[0]:
        return None
    x = matrix.tocsr().astype(np.float32)
    xt = x.T.tocsr()
    n = x.shape[1]
    lengths = np.diff(x.indptr).astype(np.int64)
    bound = int(min(n * n, (lengths * lengths).sum()))
    if _csr_matmat is None or bound >= 2**31 or not _int32(x, xt):
        return (xt @ x).tocsr()
    indptr = np.empty(n + 1, dtype=np.int32)
    indices, data = np.empty(bound, dtype=np.int32), np.empty(bound, dtype=np.float32)
    _csr_matmat(n, n, xt.indptr, xt.indices, xt.data, x.indptr, x.indices, x.data, indptr, indices, data)
    nnz = int(indptr[-1])
    return sp.csr_matrix((data[:nnz], indices[:nnz], indptr), shape=(n, n))


def _int32(*matrices: sp.csr_matrix) -> bool:
    return all(m.indptr.dtype == m.indices.dtype == np.int32 for m in matrices)


def add(out: np.ndarray, part: sp.csr_matrix | None) -> None:
    """out += part (dense += sparse), in place."""
    if part is None:
        return
    if _csr_todense is not None:  # scipy's own loop (what toarray runs): it adds into the array it is given
        _csr_todense(*part.shape, part.indptr, part.indices, part.data, out)
        return
    rows = np.repeat(np.arange(part.shape[0], dtype=np.int64) * part.shape[1], np.diff(part.indptr))
    out.reshape(-1)[rows + part.indices] += part.data  # a product's entries are distinct: one fancy add is exact


def compact(g: np.ndarray) -> np.ndarray:
    """The gram as uint16 when its counts fit (exact, and half the memory the gathers below read: about a quarter
    faster), else as it is."""
    return g.astype(np.uint16) if g.max(initial=0) < 2**16 else g


def top_neighbors(
    g: np.ndarray, counts: np.ndarray, k: int, block: int = 32, rows: tuple[int, int] | None = None
) -> np.ndarray:
    """neighbors.top_neighbors over a dense gram (float32 or compact) and the rows holding each item: per item (of rows, a range, when
    given), its k most similar other items by cosine of co-purchase (ties: lower row first), among those bought
    with it at all; -1 pads."""
    n = len(g)
    first, last = rows or (0, n)
    root = np.sqrt(np.where(counts > 0, counts, 1.0))
    out = np.full((last - first, k), -1, dtype=np.int32)
    for start in range(first, last, block):  # blocks small enough for the cache
        stop = min(last, start + block)
        sims = g[start:stop] / (root[start:stop, None] * root[None, :])  # the sparse path's float64 quotients
        sims[np.arange(stop - start), np.arange(start, stop)] = 0.0  # an item is not its own neighbour
        # Items never bought together have similarity 0, all others more: the k-th largest, but above 0.
        kth = np.maximum(np.partition(sims, n - k, axis=1)[:, n - k], _SMALLEST)
        row, col = np.nonzero(sims >= kth[:, None])  # every item tied with the k-th too
        # by similarity, ties by row number (nonzero's order, kept by the stable sort): the sparse path's order
        order = np.lexsort((-sims[row, col], row))
        row, col = row[order], col[order]
        position = np.arange(len(row)) - np.searchsorted(row, row)
        keep = position < k
        out[start - first + row[keep], position[keep]] = col[keep]
    return out


_SMALLEST = np.nextafter(0.0, 1.0)


def local_regression(
    g: np.ndarray,
    nbrs: np.ndarray,
    lam: float,
    batch: int = 512,
    progress: Callable[[int], None] = lambda _n: None,
    first: int = 0,
) -> np.ndarray:
    """neighbors.local_regression over a dense gram (float32 or compact): the ridge weights (aligned with nbrs) of each item's column on
    its neighbours' columns; nbrs holds the neighbours of items first, first + 1, ..."""
    n = len(g)
    valid = nbrs >= 0
    index = np.where(valid, nbrs, 0).astype(np.int64)
    weights = np.zeros(nbrs.shape, dtype=np.float32)
    flat = g.reshape(-1)
    for start in range(0, len(nbrs), batch):
        stop = min(len(nbrs), start + batch)
        idx, ok = index[start:stop], valid[start:stop]
        systems = flat.take(idx[:, :, None] * n + idx[:, None, :]).astype(np.float32, copy=False)
        short = np.flatnonzero(~ok.all(axis=1))  # a padded slot: zero row and column, as the sparse path
        systems[short] *= ok[short][:, :, None] & ok[short][:, None, :]
        rhs = flat.take(np.arange(first + start, first + stop, dtype=np.int64)[:, None] * n + idx)
        rhs = rhs.astype(np.float32, copy=False)
        rhs *= ok
        weights[start:stop] = neighbors.solve_ridge(systems, rhs, ok, lam)
        progress(stop - start)
    return weights


class Blocks:
    """The item-item table over a dense gram, a block of items at a time, by whichever threads call work: each
    block's rows depend on nothing but the gram, so the table is the same in any order."""

    def __init__(self, g: np.ndarray, counts: np.ndarray, k: int, lam: float, size: int = 256) -> None:
        self.g, self.counts, self.k, self.lam = compact(g), counts, k, lam
        n = len(g)
        self.nbrs = np.empty((n, k), dtype=np.int32)
        self.weights = np.empty((n, k), dtype=np.float32)
        self.todo = iter(range(0, n, size))
        self.size = size
        self.lock = threading.Lock()
        self.span: list[float] = []  # when the blocks started and ended
        self.left = len(range(0, n, size))  # blocks not finished yet
        self.done = threading.Event()  # every block finished, or one failed
        self.error: BaseException | None = None
        if not self.left:
            self.done.set()

    def work(self) -> None:
        """Compute blocks until none is left to take."""
        try:
            while True:
                with self.lock:
                    start = next(self.todo, None)
                if start is None:
                    return
                t = time.perf_counter()
                stop = min(len(self.g), start + self.size)
                nbrs = top_neighbors(self.g, self.counts, self.k, rows=(start, stop))
                self.nbrs[start:stop] = nbrs
                self.weights[start:stop] = local_regression(self.g, nbrs, self.lam, first=start)
                with self.lock:
                    self.span += [t, time.perf_counter()]
                    self.left -= 1
                    if not self.left:
                        self.done.set()
        except BaseException as err:
            self.error = err
            self.done.set()
            raise

    def wait(self) -> None:
        """Return once every block is finished, whichever thread took it (after work(): at most the other
        thread's block in progress); a block's failure is raised here too."""
        self.done.wait()
        if self.error is not None:
            raise self.error

    @property
    def seconds(self) -> float:
        """From the first block's start to the last one's end."""
        return max(self.span) - min(self.span) if self.span else 0.0

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours and weights by target, once every block is done."""
        return self.nbrs, self.weights


def pair_counts(g: np.ndarray, indptr: np.ndarray, target: np.ndarray) -> np.ndarray:
    """neighbors.counts_from_gram over a dense basket gram: per entry of the by-source table, the baskets holding
    both its items (int32)."""
    source = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return g[source, target].astype(np.int32)
