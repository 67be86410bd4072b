"""The re-ranker's training features for many queries at once: the values serving's `Reranker.features` computes one
basket at a time, bit for bit, with one numpy pass per chunk of queries instead of a hundred small calls per query.

Exactness is kept by doing each sum in the order serving does it (np.bincount adds its weights in input order, and
every query's entries keep serving's order), maxima and counts (order-free), the same element-wise operations, and
the one step whose result depends on its input's layout (the kNN features' top-k by argpartition, and the sum of
the kept likenesses) per query on the same arrays serving builds. tests/training/test_rerank_batch.py compares the
two on many baskets; tests/serving/test_reranker.py compares training's rows with a served answer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recommender.serving.csr import ranges as _ranges
from recommender.serving.rerank_links import LINKS
from recommender.serving.reranker import (
    CUSTOMER_NEIGHBOURS,
    FEATURES,
    NEVER,
    SESSION_NEIGHBOURS,
    Postings,
    Reranker,
)


@dataclass
class Batch:
    """Queries' baskets and re-ranked candidates, concatenated: per query its basket (model rows, ascending), its
    candidates (ascending) with their first-stage scores, and the table entries its basket read."""

    baskets: list[np.ndarray]
    candidates: list[np.ndarray]
    first: list[np.ndarray]
    positions: list[np.ndarray]


def _segments(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts concatenated, the query of each element, and each query's start (len(parts) + 1 bounds)."""
    sizes = np.fromiter((len(p) for p in parts), dtype=np.intp, count=len(parts))
    bounds = np.zeros(len(parts) + 1, dtype=np.intp)
    np.cumsum(sizes, out=bounds[1:])
    flat = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return flat, np.repeat(np.arange(len(parts)), sizes), bounds


class Located:
    """Finds (query, item) pairs among the batch's candidates through one array over every (query, item) of the
    chunk (a binary search over the candidates' keys cost three times the rest of the features)."""

    def __init__(self, query: np.ndarray, items: np.ndarray, n_items: int, n_queries: int) -> None:
        self.n_items = n_items
        self.query = query
        self.items = items
        self.dense = np.full(n_queries * n_items, -1, dtype=np.int32)
        self.dense[query.astype(np.int64) * n_items + items] = np.arange(len(items), dtype=np.int32)

    def __call__(self, query: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows (in the batch) of the pairs that are candidates (others: junk), and which pairs are."""
        at = self.dense.take(query.astype(np.int64) * self.n_items + items)
        return at, at >= 0


def features(model: object, batch: Batch) -> np.ndarray:
    """Feature rows of every query's candidates, stacked in query order (as Reranker.features, query by query)."""
    rr: Reranker = model.rerank_tables
    cand, cq, cb = _segments(batch.candidates)
    basket, bq, bb = _segments(batch.baskets)
    first = np.concatenate(batch.first) if batch.first else np.empty(0)
    m, n_queries = len(cand), len(batch.baskets)
    x = np.zeros((m, len(FEATURES)))
    if not m:
        return x
    sizes = np.diff(bb)
    x[:, 0] = first
    order = np.lexsort((cand, -first, cq))
    x[order, 1] = np.arange(m) - cb.take(cq.take(order)) + 1
    top = np.full(n_queries, -np.inf)
    np.maximum.at(top, cq, first)
    x[:, 2] = first / np.maximum(top, 1e-12).take(cq)
    located = Located(cq, cand, len(rr.item), n_queries)
    _links(model, rr, batch, basket, located, m, x)
    x[:, 9:14] = rr.item.take(cand, axis=0)
    x[:, 14] = _price_ratio(rr, basket, bq, bb, cand, cq)
    x[:, 15] = _text(rr, basket, bq, sizes, cand, cq, n_queries)
    x[:, 16] = _share(rr.sessions, batch.baskets, located, m, SESSION_NEIGHBOURS)[0]
    share, best, match = _share(rr.customers, batch.baskets, located, m, CUSTOMER_NEIGHBOURS)
    x[:, 17] = share
    x[:, 20] = match.take(cq)
    x[:, 18], x[:, 21], x[:, 22] = _top_customer(rr.customers, best, located, m)
    x[:, 19] = sizes.take(cq)
    return x


def _links(
    model: object, rr: Reranker, batch: Batch, basket: np.ndarray, located: Located, m: int, x: np.ndarray
) -> None:
    """Columns 3-8 (Reranker.links), every query's table entries at once."""
    positions, pq, _ = _segments(batch.positions)
    at, hit = located(pq, model.table_target.take(positions))
    hit = np.flatnonzero(hit)
    if not len(hit):
        return
    slot, entries = at.take(hit), positions.take(hit)
    # serving's positions are its basket items' table rows, in basket order: the same order, all queries on end
    sources = np.repeat(basket, model.table_indptr[basket + 1] - model.table_indptr[basket]).take(hit)
    count = model.table_count.take(entries).astype(np.float64) if model.table_count is not None else np.zeros(len(slot))
    pop_source = rr.pop1.take(sources)
    pop_target = rr.pop1.take(located.items.take(slot))
    values = np.empty((len(slot), len(LINKS)))
    values[:, 0] = model.table_weight.take(entries)
    values[:, 1] = count
    values[:, 2] = count / pop_source
    values[:, 3] = count / np.sqrt(pop_source * pop_target)
    best = np.full(m * len(LINKS), -np.inf)
    np.maximum.at(best, (slot[:, None] * len(LINKS) + np.arange(len(LINKS))).ravel(), values.ravel())
    best = best.reshape(m, len(LINKS))
    x[:, [3, 4, 6, 7]] = np.where(np.isinf(best), 0.0, best)
    x[:, 5] = np.bincount(slot, weights=count, minlength=m)
    x[:, 8] = np.bincount(slot, minlength=m)


def _price_ratio(
    rr: Reranker, basket: np.ndarray, bq: np.ndarray, bb: np.ndarray, cand: np.ndarray, cq: np.ndarray
) -> np.ndarray:
    """Column 14 (Reranker.price_ratio): each query's median known price by one sort of all of them."""
    out = np.zeros(len(cand))
    price = rr.price.take(basket)
    known = np.isfinite(price) & (price > 0)
    kq, kp = bq[known], price[known]
    order = np.lexsort((kp, kq))
    kq, kp = kq[order], kp[order]
    n_queries = len(bb) - 1
    count = np.bincount(kq, minlength=n_queries)
    start = np.zeros(n_queries, dtype=np.intp)
    np.cumsum(count[:-1], out=start[1:])
    has = count > 0
    median = np.zeros(n_queries)
    lo, hi = start[has] + (count[has] - 1) // 2, start[has] + count[has] // 2
    median[has] = (kp[lo] + kp[hi]) / 2.0
    cprice = rr.price.take(cand)
    ok = np.isfinite(cprice) & (cprice > 0) & has.take(cq)
    out[ok] = np.log(cprice[ok] / median.take(cq[ok]))
    return out


def _text(
    rr: Reranker,
    basket: np.ndarray,
    bq: np.ndarray,
    sizes: np.ndarray,
    cand: np.ndarray,
    cq: np.ndarray,
    n_queries: int,
) -> np.ndarray:
    """Column 15 (Reranker.text): every query's mean description vector as one count over (query, word)."""
    lengths = rr.word_ptr[basket + 1] - rr.word_ptr[basket]
    positions = _ranges(rr.word_ptr, basket)
    wq = np.repeat(bq, lengths)
    vectors = np.bincount(
        wq * rr.words + rr.word_idx.take(positions), weights=rr.word_val.take(positions), minlength=n_queries * rr.words
    )
    vectors = (vectors.reshape(n_queries, rr.words) / np.maximum(sizes, 1)[:, None]).ravel()
    entries = _ranges(rr.word_ptr, cand)
    if not len(entries):
        return np.zeros(len(cand))
    clen = rr.word_ptr[cand + 1] - rr.word_ptr[cand]
    owner = np.repeat(np.arange(len(cand)), clen)
    weights = rr.word_val.take(entries) * vectors.take(np.repeat(cq, clen) * rr.words + rr.word_idx.take(entries))
    return np.bincount(owner, weights=weights, minlength=len(cand))


def _share(
    postings: Postings, baskets: list[np.ndarray], located: Located, m: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Postings.share for every query: each candidate's likeness-weighted share of the query's k nearest rows; also
    each query's single most alike row (-1 when none) and the share of its basket in that row."""
    n_queries = len(baskets)
    # each item's postings read up to an equal share of serving's per-basket budget (Postings.nearest)
    sizes = np.fromiter((len(b) for b in baskets), dtype=np.int64, count=n_queries)
    basket = np.concatenate(baskets) if baskets else np.empty(0, dtype=np.int64)
    bq = np.repeat(np.arange(n_queries), sizes)
    cap = np.maximum(1, postings.budget // np.maximum(sizes, 1))
    starts = postings.item_ptr[basket]
    lengths = np.minimum(postings.item_ptr[basket + 1] - starts, cap.take(bq))
    total_read = int(lengths.sum())
    positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total_read)
    rq = np.repeat(bq, lengths)
    n_rows = len(postings.row_ptr) - 1
    keys, overlap = np.unique(rq.astype(np.int64) * n_rows + postings.item_rows.take(positions), return_counts=True)
    kq, rows = keys // n_rows, keys % n_rows
    sim = overlap / postings.row_norm.take(rows)
    bounds = np.searchsorted(kq, np.arange(n_queries + 1))
    kept = []
    total = np.ones(n_queries)
    for q in range(n_queries):  # serving's own top-k and sum, on the same arrays: their results depend on layout
        lo, hi = bounds[q], bounds[q + 1]
        if hi - lo > k:
            keep = lo + np.argpartition(-sim[lo:hi], k - 1)[:k]
            total[q] = sim.take(keep).sum()
            kept.append(keep)
        elif hi > lo:
            total[q] = sim[lo:hi].sum()
            kept.append(np.arange(lo, hi))
    keep = np.concatenate(kept) if kept else np.empty(0, dtype=np.intp)
    best = np.full(n_queries, -1, dtype=np.int64)
    match = np.zeros(n_queries)
    share = np.zeros(m)
    if not len(keep):
        return share, best, match
    # the most alike row (ties: the lowest row), as serving's lexsort((rows, -sim))[0]
    chosen = keep[np.lexsort((rows.take(keep), -sim.take(keep), kq.take(keep)))]
    firsts = chosen[np.r_[True, kq.take(chosen[1:]) != kq.take(chosen[:-1])]]
    best[kq.take(firsts)] = rows.take(firsts)
    match[kq.take(firsts)] = overlap.take(firsts) / sizes.take(kq.take(firsts)).astype(np.float64)
    kept_rows = rows.take(keep)
    row_sizes = postings.row_sizes.take(kept_rows)
    items = postings.row_items.take(_ranges(postings.row_ptr, kept_rows))
    item_q = np.repeat(kq.take(keep), row_sizes)
    at, hit = located(item_q, items)
    weights = np.repeat(sim.take(keep), row_sizes)
    share = np.bincount(at[hit], weights=weights[hit], minlength=m)
    return share / total.take(located.query), best, match


def _top_customer(
    postings: Postings, best: np.ndarray, located: Located, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns 18, 21, 22 (Postings.neighbours): from each query's most alike customer, whether they bought each
    candidate, log(1 + their baskets with it) and the days since their last purchase of it."""
    top, counts, days = np.zeros(m), np.zeros(m), np.full(m, NEVER)
    queries = np.flatnonzero(best >= 0)
    if not len(queries):
        return top, counts, days
    rows = best.take(queries)
    entries = _ranges(postings.row_ptr, rows)
    lengths = postings.row_ptr[rows + 1] - postings.row_ptr[rows]
    at, hit = located(np.repeat(queries, lengths), postings.row_items.take(entries))
    top[at[hit]] = 1.0
    if postings.row_counts is not None:
        counts[at[hit]] = np.log1p(postings.row_counts.take(entries[hit]))
        days[at[hit]] = postings.row_days.take(entries[hit])
    return top, counts, days
