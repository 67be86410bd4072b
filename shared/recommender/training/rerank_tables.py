"""The learned re-ranker's basket-independent tables, computed at training for transactions in model order: per-item
figures, posting lists of past invoices and returning customers per item (capped per item, so that an answer's work
is bounded by its basket), and TF-IDF description vectors. serving/reranker.py reads them."""

from __future__ import annotations

import re

import numpy as np

from recommender.training.ingest import Transactions

RECENT_DAYS = 30
SESSION_POSTINGS = 100  # most recent invoices kept per item for session-kNN
CUSTOMER_POSTINGS = 200  # most recent customers kept per item for customer-kNN
CUSTOMER_MAX_ITEMS = 500
WORD = re.compile(r"[a-z]{2,}")


def _per_item_cap(item: np.ndarray, recency: np.ndarray, tie: np.ndarray, cap: int) -> np.ndarray:
    """Indices of entries sorted by item, most recent first, at most cap per item."""
    order = np.lexsort((tie, -recency, item))
    item_sorted = item[order]
    first = np.searchsorted(item_sorted, item_sorted)
    return order[np.arange(len(order)) - first < cap]


def _csr(owner: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr, values) of values grouped by owner (0..n-1), owner order then given order."""
    order = np.argsort(owner, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=n), out=ptr[1:])
    return ptr, values[order]


def recency(tx: Transactions) -> np.ndarray:
    """A per-basket key that orders baskets by time (file order for undated ones and files)."""
    t = tx.basket_time
    if np.isnat(t).all():
        return np.arange(len(t), dtype=np.float64)
    seconds = t.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    low = np.nanmin(np.where(np.isnat(t), np.nan, seconds))
    return np.where(np.isnat(t), low - 1.0, seconds)


def tables(tx: Transactions, candidates: int) -> dict[str, np.ndarray]:
    """The basket-independent tables of the re-ranker's features, for transactions in model order."""
    n = len(tx.item_codes)
    pop = np.bincount(tx.pair_item, minlength=n).astype(np.float64)
    item = np.zeros((n, 5))
    item[:, 0] = np.log1p(pop)
    times = tx.basket_time
    dated = ~np.isnat(times)
    if dated.any():
        seconds = times.astype("datetime64[s]").astype(np.int64)
        end, start = seconds[dated].max(), seconds[dated].min()
        span = max((end - start) / 86400.0, 1.0)
        pair_dated = dated[tx.pair_basket]
        pair_s = seconds[tx.pair_basket]
        recent = np.bincount(tx.pair_item[pair_dated & (pair_s >= end - RECENT_DAYS * 86400)], minlength=n).astype(
            np.float64
        )
        last = np.full(n, start, dtype=np.int64)
        first = np.full(n, end, dtype=np.int64)
        np.maximum.at(last, tx.pair_item[pair_dated], pair_s[pair_dated])
        np.minimum.at(first, tx.pair_item[pair_dated], pair_s[pair_dated])
        item[:, 1] = np.log1p(recent)
        item[:, 2] = (recent + 1.0) / (pop * min(RECENT_DAYS, span) / span + 1.0)
        item[:, 3] = (end - last) / 86400.0
        item[:, 4] = (end - first) / 86400.0
    price = tx.item_prices if tx.item_prices is not None else np.full(n, np.nan)
    out: dict[str, np.ndarray] = {
        "format": np.asarray(1),
        "candidates": np.asarray(candidates),
        "item_features": item.astype(np.float32),
        "item_price": price.astype(np.float64),
    }
    when = recency(tx)
    # Sessions: each item's most recent invoices, and every item of those invoices.
    keep = _per_item_cap(tx.pair_item, when[tx.pair_basket], tx.pair_basket, SESSION_POSTINGS)
    out.update(_postings("session", tx.pair_item[keep], tx.pair_basket[keep], tx.pair_basket, tx.pair_item, n))
    # Customers: each returning customer's history (distinct items, the most bought first, capped), and per item
    # the customers who bought it most recently.
    customer = tx.basket_customer[tx.pair_basket].astype(np.int64)
    known = customer >= 0
    if known.any():
        key = customer[known] * n + tx.pair_item[known]
        keys, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        last = np.full(len(keys), -np.inf)
        np.maximum.at(last, inverse, when[tx.pair_basket][known])
        cust, it = keys // n, keys % n
        rank_order = np.lexsort((it, -counts, cust))
        first_of = np.searchsorted(cust[rank_order], cust[rank_order])
        capped = np.zeros(len(keys), dtype=bool)
        capped[rank_order[np.arange(len(keys)) - first_of < CUSTOMER_MAX_ITEMS]] = True
        cust, it, last, counts = cust[capped], it[capped], last[capped], counts[capped]
        posted = _per_item_cap(it, last, cust, CUSTOMER_POSTINGS)
        end = when.max()
        days = (end - last) / 86400.0 if dated.any() else (end - last) / max(len(when), 1)
        out.update(_postings("customer", it[posted], cust[posted], cust, it, n, counts, days))
    else:
        empty = np.empty(0, np.int64)
        out.update(_postings("customer", empty, empty, empty, empty, n, empty, empty.astype(np.float64)))
    out.update(_words(tx.descriptions))
    return out


def _postings(
    prefix: str,
    post_item: np.ndarray,
    post_row: np.ndarray,
    row: np.ndarray,
    row_item: np.ndarray,
    n: int,
    row_counts: np.ndarray | None = None,
    row_days: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Posting lists item -> rows (renumbered to the rows posted) and rows -> items, prefixed."""
    used, post_row = np.unique(post_row, return_inverse=True)
    renumber = np.full(int(row.max(initial=-1)) + 1, -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    keep = renumber[row] >= 0 if len(row) else np.zeros(0, dtype=bool)
    item_ptr, item_rows = _csr(post_item.astype(np.int64), post_row.astype(np.int32), n)
    owner = renumber[row[keep]]
    row_ptr, row_items = _csr(owner, row_item[keep].astype(np.int32), len(used))
    out = {
        f"{prefix}_item_ptr": item_ptr,
        f"{prefix}_item_rows": item_rows,
        f"{prefix}_row_ptr": row_ptr,
        f"{prefix}_row_items": row_items,
    }
    if row_counts is not None:
        out[f"{prefix}_row_counts"] = _csr(owner, row_counts[keep].astype(np.float32), len(used))[1]
        out[f"{prefix}_row_days"] = _csr(owner, row_days[keep].astype(np.float32), len(used))[1]
    return out


def _words(descriptions: list[str]) -> dict[str, np.ndarray]:
    """Each item's description as a unit TF-IDF vector over its words (CSR, word ids ascending within an item)."""
    vocab: dict[str, int] = {}
    owner, word = [], []
    for i, text in enumerate(descriptions):
        for w in sorted(set(WORD.findall((text or "").lower()))):
            owner.append(i)
            word.append(vocab.setdefault(w, len(vocab)))
    n = len(descriptions)
    owner_a, word_a = np.asarray(owner, dtype=np.int64), np.asarray(word, dtype=np.int64)
    df = np.bincount(word_a, minlength=len(vocab)).astype(np.float64)
    val = np.log((n + 1.0) / (df[word_a] + 1.0)) + 1.0 if len(word_a) else np.empty(0)
    norms = np.sqrt(np.bincount(owner_a, weights=val**2, minlength=n))
    val = val / np.maximum(norms[owner_a], 1e-12) if len(val) else val
    order = np.lexsort((word_a, owner_a))
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner_a, minlength=n), out=ptr[1:])
    return {"word_ptr": ptr, "word_idx": word_a[order].astype(np.int32), "word_val": val[order].astype(np.float64)}
