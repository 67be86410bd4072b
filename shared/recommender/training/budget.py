"""The memory a training will need at its peak, estimated from the cleaned data before the heavy stages, and the
refusal when it is over the limit (MAX_TRAINING_GB): a file of a million junk codes stops at once with one
line instead of filling the machine's memory for minutes without a word."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from recommender.core.errors import DataFileError
from recommender.training import dense_table

if TYPE_CHECKING:
    from recommender.training.ingest import Transactions
    from recommender.training.recipe import TrainingParams

# Calibrated at the default parameters (128 factors, 100 neighbours) against peak RSS: files of junk codes in
# 4-item baskets (2k, 100k, 200k products: 0.27, 1.69, 2.21 GB; estimated 0.43, 1.5, 2.6), Online Retail (0.70 GB;
# estimated 0.55) and the 10M-row scale set (5.24 GB, README Performance; estimated 5.1 from its 1.08M rows and
# about 19M entries). Within about 30%.
BASE_BYTES = 400_000_000  # the interpreter, numpy/scipy/pandas/annoy, the cleaned data
SVD_COPIES = 4  # products x (factors + 16) float64 blocks alive at once in the randomized SVD
TABLE_BYTES_PER_NEIGHBOUR = 40  # the item-item table: neighbour ids and weights while solved, then by source
INDEX_BYTES_PER_FACTOR = 10  # the Annoy index in memory (vectors and tree nodes)
OTHER_BYTES_PER_ITEM = 500  # the model's items and the holdout's model in memory
ROW_COPIES = 2  # rows x (factors + 16) float64 products in the SVD
BYTES_PER_ENTRY = 60  # the rows x products matrix in its float32/float64, CSR/CSC forms
# Up to dense_table.DENSE_MAX_ITEMS products the co-occurrence is held dense (items^2 float32): at most this many
# such arrays beyond what the sparse gram they replace would take (Online Retail: 0.73 GB measured with them).
DENSE_COPIES = 3
# The learned re-ranker, when asked for: per validation candidate row (queries x candidates), its features, the
# fitting rows' copy and LightGBM's binned copy; with a holdout, counted as two, the measured model's re-ranker and
# the published one's fitted at once (as engine.fit_rerankers does on Linux when the holdout is over 1% of the
# baskets: an upper bound otherwise). Online Retail: 1.30 GB more summed PSS for 2 x 15,900 queries.
RERANK_BYTES_PER_ROW = 420


def estimate_peak_bytes(items: int, rows: int, entries: int, factors: int = 128, neighbors: int = 100) -> int:
    """The peak memory of a training on `items` products, `rows` matrix rows (baskets and returning customers)
    and `entries` (basket, product) pairs."""
    width = min(factors + 16, items)
    per_item = (
        SVD_COPIES * 8 * width
        + TABLE_BYTES_PER_NEIGHBOUR * min(neighbors, items)
        + INDEX_BYTES_PER_FACTOR * factors
        + OTHER_BYTES_PER_ITEM
    )
    dense = DENSE_COPIES * 4 * items**2 if items <= dense_table.DENSE_MAX_ITEMS else 0
    return int(BASE_BYTES + items * per_item + rows * ROW_COPIES * 8 * width + entries * BYTES_PER_ENTRY + dense)


def rerank_bytes(baskets: int, params: TrainingParams) -> int:
    """The re-rankers' memory at their peak for a file of `baskets` (0 when the re-ranker is not asked for): their
    validation queries are bounded (max_queries), so this does not grow with the file beyond a point."""
    rp = params.rerank
    if not rp.enabled:
        return 0
    queries = min(rp.max_queries, int(rp.max_share * baskets) * rp.hidden_per_basket)
    fitted_at_once = 1 if params.holdout is None else 2
    return fitted_at_once * queries * rp.candidates * RERANK_BYTES_PER_ROW


def machine_memory_bytes() -> int | None:
    """This machine's physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


DEFAULT_LIMIT_GB = 8.0


def default_limit_gb() -> float:
    """8 GB, or half of this machine's memory if that is less (the rest stays for the system and a server beside
    the training). Enough for 100k products and 10M rows (about 5.2 GB); more takes an explicit MAX_TRAINING_GB."""
    total = machine_memory_bytes()
    return min(DEFAULT_LIMIT_GB, total / 2e9) if total else DEFAULT_LIMIT_GB


def matrix_size(tx: Transactions, params: TrainingParams) -> tuple[int, int]:
    """The rows (baskets, and returning customers' histories) and entries the training's matrix will have, at most."""
    known = tx.basket_customer[tx.basket_customer >= 0]
    baskets_per_customer = np.bincount(known) if len(known) else np.zeros(0, dtype=np.int64)
    returning = baskets_per_customer >= params.customer_min_baskets
    pair_customer = tx.basket_customer[tx.pair_basket]
    pairs_per_customer = np.bincount(pair_customer[pair_customer >= 0], minlength=len(baskets_per_customer))
    history = int(np.minimum(pairs_per_customer[returning], params.customer_max_items).sum())
    return len(tx.basket_ids) + int(returning.sum()), len(tx.pair_item) + history


def check_memory(
    tx: Transactions, params: TrainingParams, limit_gb: float | None, progress: Callable[[str], None]
) -> None:
    """Say how much memory the training will need; DataFileError (one line, saying how to raise the limit) when it
    is over limit_gb (None: default_limit_gb())."""
    limit = default_limit_gb() if limit_gb is None else limit_gb
    items = len(tx.item_codes)
    rows, entries = matrix_size(tx, params)
    rerank = rerank_bytes(len(tx.basket_ids), params) / 1e9
    need = estimate_peak_bytes(items, rows, entries, params.factors, params.neighbors) / 1e9 + rerank
    with_rerank = f", {rerank:.1f} GB of it the re-ranker's" if rerank else ""
    progress(f"memory: about {need:.1f} GB at the peak for {items:,} products{with_rerank} (limit {limit:.1f} GB)")
    if need > limit:
        how = "MAX_TRAINING_GB" if limit_gb is not None else "the default: 8 GB, or half of this machine's memory"
        raise DataFileError(
            f"this training would need about {need:.1f} GB of memory for {items:,} distinct products in {rows:,} "
            f"rows, over the limit of {limit:.1f} GB ({how}): check that the StockCode column holds product codes, "
            f"or raise the limit on a machine with the memory, e.g. make train PATH_TO_DATA=... "
            f"MAX_TRAINING_GB={int(np.ceil(need * 1.2))}"
        )
