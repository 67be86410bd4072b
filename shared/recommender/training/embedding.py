"""The model's candidate retrieval: SVD item embeddings of the damped baskets-and-histories matrix, by randomised
subspace iteration (both engines: the Spark engine supplies the products with the matrix), and the Annoy index over
them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from annoy import AnnoyIndex

from recommender.training.ingest import Transactions
from recommender.training.params import TrainingParams
from recommender.training.progress import Progress, stage


def _orthonormalize(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of y's columns: Cholesky QR done twice (fast matrix products, unlike LAPACK's
    Householder QR, which is many times slower on two busy cores); Householder only if y is rank deficient."""
    y = y.astype(np.float64)
    try:
        for _ in range(2):
            chol = np.linalg.cholesky(y.T @ y)
            y = np.linalg.solve(chol, y.T).T
        return y
    except np.linalg.LinAlgError:
        return np.linalg.qr(y)[0]


def item_embeddings(matrix: sp.csr_matrix, k: int, seed: int, iterations: int = 4) -> np.ndarray:
    """The top-k right singular vectors of matrix (items x k, unit rows), by randomized subspace iteration.

    Only items x (k + 16) blocks are dense, so this runs at any number of baskets; the signs are fixed so
    the same input always gives the same vectors.
    """
    x = matrix.astype(np.float64)
    # X'(X q) through X's transpose as CSC (no copy): it adds the rows of X q into each item's row in the same order
    # as a CSR copy of X' would (rows ascending), so the same sums bit for bit, reading X q once in order instead of
    # gathering its rows: twice as fast.
    xt = x.T

    def image_gram(q: np.ndarray) -> np.ndarray:
        y = x @ q
        return y.T @ y

    return embeddings_from_products(matrix.shape[1], k, seed, iterations, lambda q: xt @ (x @ q), image_gram)


def embeddings_from_products(
    n_items: int,
    k: int,
    seed: int,
    iterations: int,
    normal: Callable[[np.ndarray], np.ndarray],
    image_gram: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """item_embeddings given only the products with the matrix X: normal(q) = X'(X q) and image_gram(q) =
    (X q)'(X q). The Spark engine computes them on its executors and this runs on the driver, items x (k + 16)."""
    rng = np.random.default_rng(seed)
    width = min(n_items, k + 16)
    q = _orthonormalize(rng.standard_normal((n_items, width)))
    for _ in range(iterations):
        q = _orthonormalize(normal(q))
    values, vectors = np.linalg.eigh(image_gram(q))
    top = np.argsort(-values)[:k]
    v = q @ vectors[:, top]
    signs = np.sign(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])])
    v *= np.where(signs == 0, 1, signs)
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def column_scale(counts: np.ndarray, damping: float) -> np.ndarray:
    """The factor of each item column before the SVD: count^-damping (popular items damped)."""
    return np.maximum(counts, 1) ** -damping


def prime_rows(tx: Transactions, near: dict[str, list[int]] | None) -> dict[int, list[int]] | None:
    """The model rows of the codes whose neighbours are asked for, each with the list to fill."""
    if near is None:
        return None
    row = {code: i for i, code in enumerate(tx.item_codes)}
    return {row[code]: found for code, found in near.items() if code in row}


def embed_and_index(
    rows: sp.csr_matrix,
    counts: np.ndarray,
    k: int,
    params: TrainingParams,
    folder: Path,
    progress: Progress,
    near: dict[int, list[int]] | None = None,
) -> None:
    """SVD item embeddings of the damped matrix, and the Annoy index over them, written to folder."""
    with stage(progress, f"svd: {k} factors"):
        damped = (rows @ sp.diags(column_scale(counts, params.popularity_damping))).tocsr()
        embeddings = item_embeddings(damped, k, params.seed, params.svd_iterations)
    write_index(embeddings, params, folder, progress, near)


def write_index(
    embeddings: np.ndarray,
    params: TrainingParams,
    folder: Path,
    progress: Progress,
    near: dict[int, list[int]] | None = None,
) -> None:
    """The Annoy angular index over the item embeddings, written to folder/index.ann; with near, each listed
    row's nearest items are filled in while the index is loaded."""
    with stage(progress, f"index: Annoy angular, {params.n_trees} trees"):
        index = AnnoyIndex(embeddings.shape[1], "angular")
        index.set_seed(params.seed)
        for i in range(len(embeddings)):
            index.add_item(i, embeddings[i])
        index.build(params.n_trees, n_jobs=1)  # one job: several would make the trees depend on thread timing
        with _quiet_stderr():  # Annoy prints its write errors besides raising them: the error says it once
            index.save(str(folder / "index.ann"))
    for i, found in (near or {}).items():
        found[:] = index.get_nns_by_item(i, params.candidates_per_item + 1, params.search_k_per_item)
    index.unload()


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (what C++ code prints) for the duration."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
