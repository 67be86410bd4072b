"""The published model and the model that measures it, built together (single engine, catalogues the dense table
takes): the two differ by the held-out baskets alone, so they share their co-occurrence.

What is shared and what is not (bench/results/train.md has the measured costs):
- the co-occurrence: the training baskets' gram is computed once; the published model's adds the held-out
  baskets' gram, and the customer histories that the holdout leaves unchanged are counted once for both. Counts
  are exact, so each model's gram is the one it would compute alone;
- not the neighbour search nor the ridge solves: every similarity divides by the items' counts, which the
  held-out baskets change for most items, and the ridge (a share of the mean item count) differs between the two
  models, so every system differs; each model runs its own, over its own dense gram;
- not the SVD: a randomised subspace iteration on each model's own matrix; its result, and so the held-out
  figures and calibration, would change with any shortcut. Both run on the other thread while this one computes
  the co-occurrence; then the two threads share the holdout model's table and the published model's.
The published model's files are byte for byte those of recipe.build_model (tests/training/test_paired.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import scipy.sparse as sp

from recommender.core.errors import DataFileError
from recommender.training import dense_table, reranker
from recommender.training.ingest import Transactions
from recommender.training.recipe import (
    OVERLAP_MAX_ENTRIES,
    Prepared,
    Progress,
    TrainingParams,
    build_prepared,
    embed_and_index,
    finish,
    prepare,
    prime_rows,
    stage,
    table_stage,
)

T = TypeVar("T")


def can_pair(tx: Transactions) -> bool:
    """Whether the two models can be built together (the dense table's size; the SVDs run beside the tables)."""
    return len(tx.item_codes) <= dense_table.DENSE_MAX_ITEMS and len(tx.pair_item) <= OVERLAP_MAX_ENTRIES


def build_pair(
    tx: Transactions,
    train_tx: Transactions,
    held: np.ndarray,
    params: TrainingParams,
    folder: Path,
    measured: Path,
    near: dict[str, list[int]],
    progress: Progress,
    progress_measured: Progress,
    assess: Callable[[dict], T],
    rerank: reranker.Fitted | None = None,
    rerank_measured: reranker.Fitted | None = None,
) -> tuple[dict, dict | DataFileError, float, T | None]:
    """Build the published model (tx) into folder and the holdout model (train_tx: tx without the baskets where held
    is True) into measured, filling near with the holdout model's Annoy answers as recipe.build_model does, and
    call assess with the holdout model's part once it is written (while the published model is being finished).

    Returns both manifests' model parts, the seconds spent on the holdout model alone and what assess returned;
    when there is nothing to learn without the held-out baskets, the holdout model's DataFileError instead of its
    part and None for assess's (the published model is then built alone). DataFileError from the published
    model's data."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # recipe.build_model's reason: many small solves, two busy cores
        a = prepare(tx, params, progress)
        own = 0.0
        # Two threads, one per core (bench/results/train.md has the profile): this one prepares the holdout model,
        # computes the shared co-occurrence and the holdout model's table, writes that model and measures it; the
        # other computes both SVDs and indexes (the published model's first: it can start before the holdout model
        # is prepared, and it ends before the measurement needs the holdout model's). Then it helps with the holdout
        # model's table and the published model's, each thread taking the next block of items when free (per item,
        # so the same bytes in any order).
        with ThreadPoolExecutor(max_workers=1) as pool:
            embedded = pool.submit(embed_and_index, a.rows, a.counts, a.k, params, folder, progress)
            try:
                b = prepare(train_tx, params, progress_measured)
            except DataFileError as err:  # nothing to learn without the held-out baskets: the published model alone
                embedded.result()  # (its index is written again, the same: a dataset this small takes no time)
                return build_prepared(a, params, folder, progress, None, rerank), err, 0.0, None

            def embed_measured() -> float:
                t = time.perf_counter()
                embed_and_index(b.rows, b.counts, b.k, params, measured, progress_measured, prime_rows(b.tx, near))
                return time.perf_counter() - t

            embedded_measured = pool.submit(embed_measured)
            with stage(progress, "co-occurrence: the training baskets' counted once for both models"):
                g_a, basket_a, g_b, basket_b = shared_grams(a, b, held)
            published = dense_table.Blocks(g_a, a.counts, a.k_nbrs, a.ridge)
            own_table = dense_table.Blocks(g_b, b.counts, b.k_nbrs, b.ridge)
            del g_a, g_b
            # The other thread, its SVDs done, helps with the holdout model's table first (the measurement waits
            # for it), then with the published model's: neither thread waits for the other until the last blocks.
            pool.submit(own_table.work)
            helped = pool.submit(published.work)
            t = time.perf_counter()
            with stage(progress_measured, table_stage(b)):
                own_table.work()
                own_table.wait()  # the block the other thread may still be computing
            counts_b = lambda p, t: dense_table.pair_counts(basket_b, p, t)  # noqa: E731
            info_b = finish(b, *own_table.table(), counts_b, params, measured, progress_measured, rerank_measured)
            own += time.perf_counter() - t + embedded_measured.result()
            assessed = assess(info_b)
            published.work()
            helped.result()
            embedded.result()
        progress(f"{table_stage(a)} ({published.seconds:.1f} s)")
        counts = lambda p, t: dense_table.pair_counts(basket_a, p, t)  # noqa: E731
        info = finish(a, *published.table(), counts, params, folder, progress, rerank)
        return info, info_b, own, assessed


def shared_grams(a: Prepared, b: Prepared, held: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The dense grams of both models, each in its own item numbering: (a's rows, a's baskets, b's rows, b's
    baskets), where b is a without the baskets held (a boolean per basket row of a)."""
    n = len(a.tx.item_codes)
    position = {code: i for i, code in enumerate(a.tx.item_codes)}
    to_a = np.fromiter((position[code] for code in b.tx.item_codes), dtype=np.int64, count=len(b.tx.item_codes))
    common, only_a, only_b = _split_histories(a.customers, _renumbered(b.customers, to_a, n))
    history = dense_table.product(common)
    basket_a = dense_table.gram(a.baskets[~held])  # the training baskets' gram, the big product, once
    rows_b = basket_a.copy()
    for part in (history, dense_table.product(only_b)):
        dense_table.add(rows_b, part)
    # In b's numbering: rows then columns, each a take (np.ix_'s one gather is seven times slower); g_b goes into
    # rows_b's memory and basket_b's rows into the same scratch as g_b's: each 62 MB array fresh from the system
    # costs its page faults (a quarter of this function's time), so two fewer of them.
    m = len(to_a)
    scratch = rows_b.take(to_a, axis=0)
    g_b = rows_b.reshape(-1)[: m * m].reshape(m, m)
    scratch.take(to_a, axis=1, out=g_b, mode="clip")  # (the indices are valid: clip only spares a buffered copy)
    basket_a.take(to_a, axis=0, out=scratch, mode="clip")
    basket_b = scratch.take(to_a, axis=1)
    del rows_b, scratch
    dense_table.add(basket_a, dense_table.product(a.baskets[held]))
    g_a = basket_a.copy()
    for part in (history, dense_table.product(only_a)):
        dense_table.add(g_a, part)
    return g_a, basket_a, g_b, basket_b


def _renumbered(matrix: sp.csr_matrix | None, to_a: np.ndarray, n: int) -> sp.csr_matrix | None:
    """matrix with its item columns renumbered to a's rows."""
    if matrix is None:
        return None
    return sp.csr_matrix((matrix.data, to_a[matrix.indices], matrix.indptr), shape=(matrix.shape[0], n))


def _split_histories(
    a: sp.csr_matrix | None, b: sp.csr_matrix | None
) -> tuple[sp.csr_matrix | None, sp.csr_matrix | None, sp.csr_matrix | None]:
    """The customer-history rows both matrices hold (as a multiset: a gram is a sum over rows, whoever they
    belong to), those only a holds and those only b holds (None: no rows)."""
    if a is None or b is None:
        return None, a, b

    def keys(m: sp.csr_matrix) -> list[bytes]:
        out = []
        for lo, hi in zip(m.indptr[:-1].tolist(), m.indptr[1:].tolist()):
            order = np.argsort(m.indices[lo:hi])
            out.append(m.indices[lo:hi][order].tobytes() + m.data[lo:hi][order].tobytes())
        return out

    a_keys, b_keys = keys(a), keys(b)
    left = Counter(b_keys)
    in_both, only_a, only_b = [], [], []
    for r, key in enumerate(a_keys):
        if left[key]:
            left[key] -= 1
            in_both.append(r)
        else:
            only_a.append(r)
    for r, key in enumerate(b_keys):
        if left[key]:  # what is left of each key after the matches: rows b holds beyond a's
            left[key] -= 1
            only_b.append(r)
    return a[in_both], a[only_a], b[only_b]
