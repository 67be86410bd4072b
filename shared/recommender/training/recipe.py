"""The model recipe both engines follow: basket and customer matrices, the item-item table, SVD embeddings, the
Annoy index, and the artifacts of a model version."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from annoy import AnnoyIndex
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from recommender.core.errors import DataFileError
from recommender.core.items import ITEMS_FILE, Items
from recommender.core.resemblance import RESEMBLANCE_FILE, TextIndex
from recommender.training import copurchase, dense_table, holdout, neighbors, reranker, sample_invoices
from recommender.training.ingest import Transactions, reorder_items

MIN_ITEMS = 3
MIN_BASKETS = 2
# Up to this many matrix entries, the embedding is computed beside the item-item table (peak memory adds up).
OVERLAP_MAX_ENTRIES = 5_000_000
# table_count.npy: per table entry, the training baskets holding both items (the reasons' `baskets`);
# item_price.npy: per item, its most recent unit price in the file (NaN when unknown; the feed's default price).
ARTIFACTS = (
    "index.ann",
    "table_indptr.npy",
    "table_target.npy",
    "table_weight.npy",
    "table_count.npy",
    "item_price.npy",
    ITEMS_FILE,
    sample_invoices.SAMPLES,
    RESEMBLANCE_FILE,  # the items' description vectors: where a product the model never saw belongs
)


@dataclass(frozen=True)
class TrainingParams:
    """The hyperparameters of a model, chosen on a validation split (README, Quality); stored in its manifest."""

    # Rows of the matrix: one per basket, plus one per returning customer (their whole history, capped).
    customer_min_baskets: int = 2
    customer_max_items: int = 500  # bounds the co-purchase pairs a wholesale customer adds
    # Item-item table: EASE's regression restricted to each item's top-K neighbours; re-ranks the candidates.
    neighbors: int = 100
    ridge_share: float = 0.2  # lambda = ridge_share * mean item count: scale-free across datasets
    # Annoy over SVD item embeddings: candidate retrieval.
    factors: int = 128
    popularity_damping: float = 0.5  # item columns scaled by count^-damping before the SVD
    svd_iterations: int = 4
    n_trees: int = 20
    # Query time: the candidates are each basket item's nearest items in the Annoy index.
    candidates_per_item: int = 50
    search_k_per_item: int = 1000
    seed: int = 0
    # The most recent baskets kept out of training to measure the model (None: train on everything, unmeasured).
    holdout: holdout.HoldoutPolicy | None = field(default_factory=holdout.HoldoutPolicy)
    # The learned re-ranker of the first stage's best candidates (training/reranker.py). Off unless asked for
    # (make train RERANK=1; make evaluate always trains it): it lifts HR@10 by about 6% on Online Retail but costs
    # about 1.3 ms of CPU per answer against 0.08 ms, and four times the training time (bench/results/quality.md).
    rerank: reranker.RerankParams = field(default_factory=lambda: reranker.RerankParams(enabled=False))


Progress = Callable[[str], None]


def say(text: str) -> None:
    """Print one line of progress in one write, so lines from a training's two threads never run together."""
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def basket_matrix(tx: Transactions) -> sp.csr_matrix:
    """Binary baskets x items matrix (an item bought twice in one invoice counts once)."""
    n_baskets, n_items = len(tx.basket_ids), len(tx.item_codes)
    data = np.ones(len(tx.pair_item), dtype=np.float32)
    return sp.csr_matrix((data, (tx.pair_basket, tx.pair_item)), shape=(n_baskets, n_items))


def customer_matrix(tx: Transactions, min_baskets: int, max_items: int) -> sp.csr_matrix | None:
    """One binary row per returning customer: the items of their whole history, at most max_items of them (the
    ones they bought in most baskets, ties by item row); None without returning customers."""
    customer = tx.basket_customer[tx.pair_basket].astype(np.int64)
    known = customer >= 0
    if not known.any():
        return None
    n = len(tx.item_codes)
    keys, counts = np.unique(customer[known] * n + tx.pair_item[known], return_counts=True)
    cust, item = keys // n, keys % n
    baskets = np.bincount(tx.basket_customer[tx.basket_customer >= 0])
    keep = baskets[cust] >= min_baskets
    cust, item, counts = cust[keep], item[keep], counts[keep]
    if not len(cust):
        return None
    order = np.lexsort((item, -counts, cust))
    cust, item = cust[order], item[order]
    first = np.searchsorted(cust, cust)  # start of each customer's run
    capped = np.arange(len(cust)) - first < max_items
    rows = np.unique(cust[capped], return_inverse=True)[1]
    return sp.csr_matrix(
        (np.ones(int(capped.sum()), dtype=np.float32), (rows, item[capped])), shape=(int(rows.max()) + 1, n)
    )


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


def ridge_lambda(counts: np.ndarray, params: TrainingParams) -> float:
    """The ridge of the item-item regressions: a share of the mean item count (scale-free across datasets)."""
    return params.ridge_share * float(counts[counts > 0].mean())


def factors_for(n_items: int, n_rows: int, params: TrainingParams) -> int:
    """The SVD rank: the configured factors, bounded by the matrix's size."""
    return max(1, min(params.factors, n_items - 1, n_rows - 1))


def popularity_order(popularity: np.ndarray) -> np.ndarray:
    """Items from the most to the least popular, ties in order of first appearance (their current numbering)."""
    return np.argsort(-popularity, kind="stable")


def check_size(n_items: int, n_baskets: int) -> None:
    """DataFileError when the cleaned data is too small for a model."""
    if n_items < MIN_ITEMS:
        raise DataFileError(f"only {n_items} distinct item(s) after cleaning; a model needs at least {MIN_ITEMS}")
    if n_baskets < MIN_BASKETS:
        raise DataFileError(f"only {n_baskets} basket(s) after cleaning; a model needs at least {MIN_BASKETS}")


@contextmanager
def stage(progress: Progress, text: str) -> Iterator[None]:
    """Report a training stage with its duration when it ends."""
    t = time.perf_counter()
    yield
    progress(f"{text} ({time.perf_counter() - t:.1f} s)")


def build_model(
    tx: Transactions,
    params: TrainingParams,
    folder: Path,
    progress: Progress = say,
    near: dict[str, list[int]] | None = None,
    rerank: reranker.Fitted | None = None,
) -> dict:
    """Train on cleaned baskets, write every artifact into folder, and return the manifest's model part.
    DataFileError when nothing in them was bought together. With rerank, the re-ranker's tables are written too
    (rerank.npz), with its trees when it has some (a validation model gets the tables alone).

    With near ({code: []} for some items), the thread that builds the Annoy index, when it runs beside the
    item-item table, also fills in each of those items' nearest items (model rows) while it would otherwise wait:
    what serving asks Annoy first, asked for free (the holdout's queries use it).
    """
    check_size(len(tx.item_codes), len(tx.basket_ids))
    # One BLAS thread: the work is many small solves, and OpenBLAS threads that spin while another process
    # holds the other core made training several times slower here (a server may be running beside it).
    with threadpool_limits(limits=1):
        return _build(tx, params, folder, progress, near, rerank)


def _build(
    tx: Transactions,
    params: TrainingParams,
    folder: Path,
    progress: Progress,
    near: dict[str, list[int]] | None,
    rerank: reranker.Fitted | None = None,
) -> dict:
    return build_prepared(prepare(tx, params, progress), params, folder, progress, near, rerank)


def build_prepared(
    m: Prepared,
    params: TrainingParams,
    folder: Path,
    progress: Progress,
    near: dict[str, list[int]] | None = None,
    rerank: reranker.Fitted | None = None,
) -> dict:
    """build_model's work once its inputs are prepared (with one BLAS thread)."""
    n_items = len(m.tx.item_codes)
    # The embedding and its index need nothing from the item-item table: on a dataset that fits twice in memory
    # they run on the other core meanwhile (each with one BLAS thread); on a large one they wait their turn.
    overlap = m.rows.nnz <= OVERLAP_MAX_ENTRIES
    dense = n_items <= dense_table.DENSE_MAX_ITEMS
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The table's co-occurrence is the baskets' gram (which the reasons' counts need too) plus the customer
        # histories' one: each computed once, the second on the other core before the embedding.
        customer_gram = (
            pool.submit(neighbors.gram, m.customers) if overlap and not dense and m.customers is not None else None
        )
        embedding = (
            pool.submit(embed_and_index, m.rows, m.counts, m.k, params, folder, progress, prime_rows(m.tx, near))
            if overlap
            else None
        )
        basket_gram = dense_gram = None
        with stage(progress, table_stage(m)):
            if dense:
                dense_gram = dense_table.gram(m.baskets)
                g = dense_gram
                if m.customers is not None:
                    g = dense_gram.copy()
                    dense_table.add(g, dense_table.product(m.customers))
                # by blocks of items: the other core joins in when its embedding is done
                blocks = dense_table.Blocks(g, m.counts, m.k_nbrs, m.ridge)
                helped = pool.submit(blocks.work)
                blocks.work()
                helped.result()
                table_index, table_weight = blocks.table()
            else:
                if overlap:
                    basket_gram = neighbors.gram(m.baskets)
                    g = basket_gram if customer_gram is None else neighbors.combine(basket_gram, customer_gram.result())
                else:  # a large dataset: one gram at a time, the reasons' counts a block at a time later
                    g = neighbors.gram(m.rows)
                table_index = neighbors.top_neighbors(g, m.k_nbrs)
                with tqdm(total=n_items, desc="regression", unit=" items", leave=False, disable=None) as bar:
                    table_weight = neighbors.local_regression(g, table_index, m.ridge, progress=bar.update)
            del g
        if embedding is None:
            embed_and_index(m.rows, m.counts, m.k, params, folder, progress)
        else:
            embedding.result()

    def pair_counts(indptr: np.ndarray, target: np.ndarray) -> np.ndarray:
        if dense_gram is not None:
            return dense_table.pair_counts(dense_gram, indptr, target)
        if basket_gram is not None:
            return neighbors.counts_from_gram(basket_gram, indptr, target)
        return neighbors.table_counts(m.baskets, indptr, target)

    return finish(m, table_index, table_weight, pair_counts, params, folder, progress, rerank)


@dataclass
class Prepared:
    """A model's inputs: the transactions with items numbered most popular first, the basket and customer
    matrices and their stack, the co-purchase signal, the rows holding each item, the SVD rank, the number of
    neighbours and the ridge."""

    tx: Transactions
    baskets: sp.csr_matrix
    customers: sp.csr_matrix | None
    rows: sp.csr_matrix
    signal: copurchase.Signal
    counts: np.ndarray
    k: int
    k_nbrs: int
    ridge: float


def prepare(tx: Transactions, params: TrainingParams, progress: Progress) -> Prepared:
    """Number the items, build the matrices and check there is something to learn (DataFileError when not)."""
    n_items = len(tx.item_codes)
    # Number the items from the most to the least popular (ties keep file order): the serving side breaks
    # score ties by popularity for free.
    tx = reorder_items(tx, popularity_order(np.bincount(tx.pair_item, minlength=n_items)))
    baskets = basket_matrix(tx)
    customers = customer_matrix(tx, params.customer_min_baskets, params.customer_max_items)
    rows = baskets if customers is None else sp.vstack([baskets, customers]).tocsr()
    progress(
        f"matrix: {baskets.shape[0]:,} baskets + {rows.shape[0] - baskets.shape[0]:,} returning customers' "
        f"histories x {n_items:,} items, {rows.nnz:,} entries"
    )
    signal = copurchase.measure(rows.indptr, rows.indices, n_items)
    copurchase.check(signal, baskets.shape[0], progress)
    counts = np.bincount(rows.indices, minlength=n_items).astype(np.float64)  # rows holding each item
    return Prepared(
        tx,
        baskets,
        customers,
        rows,
        signal,
        counts,
        factors_for(n_items, rows.shape[0], params),
        min(params.neighbors, n_items - 1),
        ridge_lambda(counts, params),
    )


def table_stage(m: Prepared) -> str:
    """The item-item table's progress line."""
    return f"item-item table: top {m.k_nbrs} neighbours per item, local ridge regression"


def dense_item_table(g: np.ndarray, m: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """The item-item table (neighbours and weights by target) from the dense gram of m's rows."""
    g = dense_table.compact(g)
    table_index = dense_table.top_neighbors(g, m.counts, m.k_nbrs)
    with tqdm(total=len(g), desc="regression", unit=" items", leave=False, disable=None) as bar:
        return table_index, dense_table.local_regression(g, table_index, m.ridge, progress=bar.update)


def finish(
    m: Prepared,
    table_index: np.ndarray,
    table_weight: np.ndarray,
    pair_counts: Callable[[np.ndarray, np.ndarray], np.ndarray],
    params: TrainingParams,
    folder: Path,
    progress: Progress,
    rerank: reranker.Fitted | None,
) -> dict:
    """Write the model's artifacts (its index is written already) and return the manifest's model part."""
    tx = m.tx
    popularity = np.asarray(m.baskets.sum(axis=0)).ravel().astype(np.int64)
    chosen = sample_invoices.draw(
        tx.basket_ids, tx.pair_basket, tx.pair_item, tx.item_codes, tx.basket_time, seed=params.seed
    )
    info = finish_model(
        folder,
        ModelParts(
            tx.item_codes,
            tx.descriptions,
            popularity,
            table_index,
            table_weight,
            k=m.k,
            ridge=m.ridge,
            baskets=m.baskets.shape[0],
            customer_rows=m.rows.shape[0] - m.baskets.shape[0],
            samples=chosen,
            pair_counts=pair_counts,
            prices=tx.item_prices,
            signal=m.signal.as_dict(),
        ),
        params,
    )
    if rerank is not None:
        with stage(progress, "re-ranker tables"):
            info["rerank"] = reranker.write(folder, tx, params.rerank, rerank)
    return info


@dataclass
class ModelParts:
    """What an engine hands to the driver-side finishing: items in model order (most popular first), baskets
    per item, the item-item table by target (items x K neighbours and weights), the sample invoices, how to count
    the baskets of each table entry, the items' prices, and the SVD embeddings when the index is not written yet."""

    item_codes: list[str]
    descriptions: list[str]
    popularity: np.ndarray  # int64 baskets holding each item
    table_index: np.ndarray  # int32 items x K, -1 pads
    table_weight: np.ndarray  # float32 items x K
    k: int
    ridge: float
    baskets: int
    customer_rows: int
    samples: list[dict]
    pair_counts: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (indptr, target) by source -> baskets per entry
    prices: np.ndarray | None = None  # float64 per item, NaN unknown; None: the input has no UnitPrice
    signal: dict | None = None  # copurchase.measure's figures
    embeddings: np.ndarray | None = None


def finish_model(folder: Path, parts: ModelParts, params: TrainingParams, progress: Progress = say) -> dict:
    """Write the artifacts both engines share (Annoy index from the embeddings when given, the table by source,
    the items, the sample invoices) into folder; return the manifest's model part."""
    if parts.embeddings is not None:
        write_index(parts.embeddings, params, folder, progress)
    indptr, target, weight = neighbors.by_source(parts.table_index, parts.table_weight)
    np.save(folder / "table_indptr.npy", indptr)
    np.save(folder / "table_target.npy", target)
    np.save(folder / "table_weight.npy", weight)
    np.save(folder / "table_count.npy", parts.pair_counts(indptr, target))
    prices = parts.prices if parts.prices is not None else np.full(len(parts.item_codes), np.nan)
    np.save(folder / "item_price.npy", prices.astype(np.float64))
    items = Items(parts.item_codes, parts.descriptions, parts.popularity.tolist())
    (folder / ITEMS_FILE).write_bytes(items.to_json())
    (folder / RESEMBLANCE_FILE).write_bytes(TextIndex.build(parts.descriptions).to_bytes())
    sample_invoices.write(folder / sample_invoices.SAMPLES, parts.samples)
    return {
        "baskets": parts.baskets,
        "signal": parts.signal,
        "factors": parts.k,
        "metric": "angular",
        "neighbors": int(parts.table_index.shape[1]),
        "ridge": round(parts.ridge, 4),
        "customer_rows": parts.customer_rows,
        "table_entries": int(len(target)),
        "query": {"candidates_per_item": params.candidates_per_item, "search_k_per_item": params.search_k_per_item},
    }


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


def purchase_period(basket_time: np.ndarray) -> dict | None:
    """The first and last purchase a model learned from (None for a file without dates)."""
    dated = basket_time[~np.isnat(basket_time)]
    if not len(dated):
        return None
    return {"first": str(dated.min()), "last": str(dated.max())}


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
