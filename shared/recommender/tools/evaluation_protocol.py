"""The evaluation's protocol: temporal leave-one-out cases drawn from the last days of a file, and their scores
(HR, MRR and NDCG at 10, coverage, the HR@k curve, bootstrap intervals and paired gains).

Test baskets are the invoices of the last `days` days of the file; the model trains on every invoice before them.
For each test invoice (in InvoiceNo order) with at least two distinct products known to the training data, one of
those (sorted by code) is hidden, chosen by a seeded generator; the others are the query.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recommender.core.errors import DataFileError
from recommender.training import holdout
from recommender.training.ingest import Transactions, select_baskets

K = 10
CURVE_K = 20


@dataclass
class Cases:
    """Leave-one-out cases on a training model's items: query item rows and the hidden item row of each."""

    queries: list[np.ndarray]
    hidden: np.ndarray

    def __len__(self) -> int:
        return len(self.hidden)


@dataclass
class Split:
    """Training transactions and the cases drawn from the held-out days."""

    train: Transactions
    cases: Cases
    cutoff: np.datetime64


@dataclass
class MethodResult:
    """The scores of one method on one set of cases."""

    name: str
    hr: float
    mrr: float
    ndcg: float
    coverage: float
    hr_curve: list[float] = field(default_factory=list)  # HR@k for k = 1..CURVE_K
    note: str = ""
    ece: float | None = None  # expected calibration error of its confidence (the product only)
    hr_interval: tuple[float, float] | None = None  # 95% bootstrap interval of HR@10 over the test cases
    hits: list[bool] = field(default_factory=list, repr=False)  # per case: the hidden item in the top K


@dataclass
class Gain:
    """HR@10 of one method over another's, with the 95% paired bootstrap interval of the ratio over test cases."""

    method: str
    against: str
    ratio: float
    low: float
    high: float


def temporal_split(tx: Transactions, days: int, seed: int = 0) -> Split:
    """Train on baskets before the last `days` days; draw the cases from those days."""
    if np.isnat(tx.basket_time).all():
        raise DataFileError("evaluation needs dates: the file has no usable InvoiceDate column")
    dated = ~np.isnat(tx.basket_time)
    cutoff = tx.basket_time[dated].max() - np.timedelta64(days, "D")
    is_test = dated & (tx.basket_time >= cutoff)
    train = select_baskets(tx, dated & ~is_test)
    if train.report.baskets < 2 or not is_test.any():
        raise DataFileError(f"the last {days} days leave too little data on one side of the split")
    index = {code: i for i, code in enumerate(train.item_codes)}
    items_by_basket = np.split(
        tx.pair_item[np.argsort(tx.pair_basket, kind="stable")],
        np.cumsum(np.bincount(tx.pair_basket, minlength=len(tx.basket_ids)))[:-1],
    )
    test = sorted(np.flatnonzero(is_test), key=lambda b: tx.basket_ids[b])
    drawn = holdout.leave_one_out([[tx.item_codes[i] for i in items_by_basket[b]] for b in test], index, seed)
    queries = [np.array([index[c] for c in query], dtype=np.int64) for _, query, _ in drawn]
    hidden = [index[h] for _, _, h in drawn]
    if not hidden:
        raise DataFileError(f"no test basket in the last {days} days has two products known to the training data")
    return Split(train, Cases(queries, np.array(hidden, dtype=np.int64)), cutoff)


def score(name: str, ranked: list[np.ndarray], cases: Cases, n_items: int, note: str = "") -> MethodResult:
    """HR, MRR and NDCG at K, coverage of the top-K lists, and the HR@k curve, from ranked item rows."""
    ranks = np.full(len(cases), np.inf)
    seen: set[int] = set()
    for c, (items, hidden) in enumerate(zip(ranked, cases.hidden)):
        items = list(items)
        seen.update(int(i) for i in items[:K])
        if hidden in items:
            ranks[c] = items.index(hidden) + 1
    hit = ranks <= K
    return MethodResult(
        name=name,
        hr=float(hit.mean()),
        mrr=float(np.where(hit, 1.0 / ranks, 0.0).mean()),
        ndcg=float(np.where(hit, 1.0 / np.log2(ranks + 1), 0.0).mean()),
        coverage=len(seen) / n_items,
        hr_curve=[float((ranks <= k).mean()) for k in range(1, CURVE_K + 1)],
        note=note,
        hr_interval=bootstrap_interval(hit),
        hits=hit.tolist(),
    )


BOOTSTRAP_DRAWS = 2000


def _resamples(n: int, seed: int = 0) -> np.ndarray:
    """BOOTSTRAP_DRAWS resamples of n test cases (the same ones for every method: paired)."""
    return np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP_DRAWS, n))


def bootstrap_interval(hit: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the hit rate over test cases."""
    hit = np.asarray(hit, dtype=np.float64)
    if not len(hit):
        return (0.0, 0.0)
    means = hit[_resamples(len(hit), seed)].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def gain(method: MethodResult, against: MethodResult, seed: int = 0) -> Gain:
    """method's HR@10 over against's, with the 95% paired bootstrap interval of the ratio (same resampled cases)."""
    a, b = np.asarray(method.hits, dtype=np.float64), np.asarray(against.hits, dtype=np.float64)
    draws = _resamples(len(a), seed)
    ratios = a[draws].mean(axis=1) / np.maximum(b[draws].mean(axis=1), 1e-12)
    return Gain(
        method.name,
        against.name,
        float(a.mean() / max(b.mean(), 1e-12)),
        float(np.percentile(ratios, 2.5)),
        float(np.percentile(ratios, 97.5)),
    )
