"""The baselines the product is scored against, on the same cases: popularity, item co-occurrence cosine, and EASE
(its lambda tuned on a validation split, never on the test days)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from recommender.tools.evaluation_protocol import CURVE_K, Cases, Split, score
from recommender.training.ingest import Transactions
from recommender.training.recipe import basket_matrix

EASE_LAMBDAS = (5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
EASE_MAX_ITEMS = 12_000  # beyond this the dense items x items eigendecomposition takes too long and too much memory


def _top(scores: np.ndarray, cases: Cases, n: int = CURVE_K) -> list[np.ndarray]:
    """Top-n rows of each case's score row, basket items excluded, ties by row number."""
    out = []
    for row, query in zip(scores, cases.queries):
        row = np.asarray(row, dtype=np.float64).copy()
        row[query] = -np.inf
        top = np.argpartition(-row, n)[:n]
        out.append(top[np.lexsort((top, -row[top]))])
    return out


def _query_matrix(cases: Cases, n_items: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(cases)), [len(q) for q in cases.queries])
    cols = np.concatenate(cases.queries)
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(cases), n_items))


def popularity(split: Split) -> list[np.ndarray]:
    """Most popular training items, the same for every basket."""
    pop = np.asarray(basket_matrix(split.train).sum(axis=0)).ravel()
    return _top(np.broadcast_to(pop, (len(split.cases), len(pop))), split.cases)


def cooccurrence(split: Split) -> list[np.ndarray]:
    """Sum over the basket of the cosine similarity of co-purchase."""
    x = basket_matrix(split.train).tocsc().astype(np.float64)
    gram = (x.T @ x).tocsr()
    norms = np.sqrt(gram.diagonal())
    norms[norms == 0] = 1
    cosine = sp.diags(1 / norms) @ gram @ sp.diags(1 / norms)
    cosine.setdiag(0)
    q = _query_matrix(split.cases, x.shape[1])
    return _chunked_top(lambda rows: (q[rows] @ cosine).toarray(), split.cases)


def _chunked_top(scores_of: Callable[[slice], np.ndarray], cases: Cases, chunk: int = 512) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for start in range(0, len(cases), chunk):
        rows = slice(start, min(len(cases), start + chunk))
        out.extend(_top(scores_of(rows), Cases(cases.queries[rows], cases.hidden[rows])))
    return out


class Ease:
    """EASE (Steck 2019): B = I - P diag(1/diag(P)), P = (X'X + lambda I)^-1, diagonal forced to zero.

    The Gram matrix is diagonalised once, so each lambda costs one matrix product instead of an inverse.
    """

    def __init__(self, train: Transactions) -> None:
        x = basket_matrix(train).astype(np.float64)
        gram = (x.T @ x).toarray()
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(gram)

    def weights(self, lam: float) -> np.ndarray:
        """The item-item weight matrix B for one lambda."""
        p = (self.eigenvectors / (self.eigenvalues + lam)) @ self.eigenvectors.T
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        return b

    def recommend(self, lam: float, cases: Cases) -> list[np.ndarray]:
        """Ranked item rows for each case."""
        b = self.weights(lam)
        q = _query_matrix(cases, b.shape[0])
        return _chunked_top(lambda rows: np.asarray(q[rows] @ b), cases)


def tune_ease(validation: Split, progress: Callable[[str], None]) -> tuple[float, dict[float, float]]:
    """The lambda with the best validation HR@10, and the whole grid."""
    ease = Ease(validation.train)
    n_items = len(validation.train.item_codes)
    grid = {
        lam: score("ease", ease.recommend(lam, validation.cases), validation.cases, n_items).hr for lam in EASE_LAMBDAS
    }
    best = max(grid, key=lambda lam: (grid[lam], -lam))
    progress("EASE lambda on validation (HR@10): " + ", ".join(f"{lam:g}: {hr:.4f}" for lam, hr in grid.items()))
    return best, grid
