"""A big basket's first stage, bounded: each basket item's strongest table entries (by weight), up to BUDGET entries
in all, instead of every entry of its rows (a basket of 700 items would sum over 100,000 entries for its answer).
Baskets whose rows hold at most BUDGET entries read every one of them, as ever.

The strongest entries of a row are its first ones in weight order: each row's entries are ordered by weight the
first time a big basket reads the row, and remembered (a long-running server orders every row at warm-up), so
loading a model costs nothing more. Every entry read (bounded or not) is a position in the table, and every part
of the answer (scores, the re-ranker's links, reasons) reads the same entries. The re-ranker's training reads
every entry (Model.score_basket(bounded=False)): on Online Retail, trees learnt from the bounded reads ranked
worse (HR@10 0.331 instead of 0.342), while trees learnt from every entry rank big baskets' bounded reads as well
as their full ones.
"""

from __future__ import annotations

import numpy as np

from recommender.serving.csr import entry_sources, ranges

# Entries read at most per basket. On Online Retail 9% of the test baskets exceed it, each of 41 items or more;
# each basket item then keeps its strongest min(row length, cap) entries, cap the largest that fits.
BUDGET = 10_000


class WeightOrder:
    """The table's entries of each row in weight order, strongest first (ties in table order), as positions in the
    table; ordered row by row when first asked for, then remembered. Bound to one table (its indptr and weight)."""

    def __init__(self, indptr: np.ndarray, target: np.ndarray, weight: np.ndarray) -> None:
        self.indptr = indptr
        self.weight = weight
        self.table_target = target
        self.order = np.empty(len(weight), dtype=np.intp)
        # the entries' targets and weights in the same order: a bounded read takes each row's first ones, in a row
        # next to each other (fewer cache lines than gathering them through order)
        self.target = np.empty_like(target)
        self.weights = np.empty_like(weight)
        self.done = np.zeros(len(indptr) - 1, dtype=bool)

    def prepare(self, rows: np.ndarray) -> None:
        """Order the entries of rows not ordered yet (threads racing on a row write the same values; a row is
        marked done only once written)."""
        todo = rows[~self.done.take(rows)]
        if not len(todo):
            return
        positions = ranges(self.indptr, todo)
        row = np.repeat(np.arange(len(todo)), self.indptr[todo + 1] - self.indptr[todo])
        # lexsort is stable: equal weights keep their table order
        ordered = positions.take(np.lexsort((-self.weight.take(positions), row)))
        self.target[positions] = self.table_target.take(ordered)
        self.weights[positions] = self.weight.take(ordered)
        self.order[positions] = ordered
        self.done[todo] = True

    def read(self, basket: np.ndarray, lengths: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The strongest entries of each basket row, at most budget in all (basket rows in order, each row's first
        min(length, cap) in weight order, cap the largest that fits): their positions in the table, targets and
        weights."""
        self.prepare(basket)
        at = ranges(self.indptr, basket, cap(lengths, budget))
        return self.order.take(at), self.target.take(at), self.weights.take(at)


def cap(lengths: np.ndarray, budget: int) -> int:
    """The largest c with sum(min(lengths, c)) <= budget (lengths: more than budget in all)."""
    s = np.sort(lengths)
    n = len(s)
    cum = np.cumsum(s)
    # the total at c = s[k]: the rows shorter than s[k] in full, the others at s[k] each (non-decreasing in k)
    at_length = cum - s + s * (n - np.arange(n))
    k = int(np.searchsorted(at_length, budget, side="right")) - 1
    if k < 0:
        return budget // n
    if k == n - 1:
        return int(s[-1])
    # between s[k] and s[k + 1]: rows 0..k in full, the n - k - 1 others at c each
    return int((budget - cum[k]) // (n - k - 1))


def weight_order(model: object) -> WeightOrder:
    """The model's (view's) WeightOrder of its own table, made when first needed."""
    made = model.__dict__.get("_weight_order")
    if made is None or made.indptr is not model.table_indptr:
        made = model._weight_order = WeightOrder(model.table_indptr, model.table_target, model.table_weight)
    return made


def sources(indptr: np.ndarray, basket: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The basket item (table row) of each entry read, aligned with positions (every entry of the basket's rows
    in order, or a bounded read)."""
    lengths = indptr[basket + 1] - indptr[basket]
    if int(lengths.sum()) == len(positions):
        return np.repeat(basket, lengths)
    return entry_sources(indptr, positions)
