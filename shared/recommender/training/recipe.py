"""The model recipe both engines follow: basket and customer matrices, the item-item table, SVD embeddings and the
Annoy index (training/embedding.py), and the artifacts of a model version (training/artifacts.py)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from recommender.core.errors import DataFileError
from recommender.training import copurchase, dense_table, neighbors, reranker, sample_invoices
from recommender.training.artifacts import (  # noqa: F401 (re-exported: other modules and tests name them here)
    ARTIFACTS,
    ModelParts,
    finish_model,
    purchase_period,
)
from recommender.training.embedding import (  # noqa: F401 (re-exported)
    column_scale,
    embed_and_index,
    embeddings_from_products,
    item_embeddings,
    prime_rows,
    write_index,
)
from recommender.training.ingest import Transactions, reorder_items
from recommender.training.params import TrainingParams  # noqa: F401 (re-exported)
from recommender.training.progress import Progress, say, stage  # noqa: F401 (re-exported)

MIN_ITEMS = 3
MIN_BASKETS = 2

# Up to this many matrix entries, the embedding is computed beside the item-item table (peak memory adds up).
OVERLAP_MAX_ENTRIES = 5_000_000


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
