"""Why an item is in a merchandised answer (explain): the basket items whose table weights make up its score, and
for items the learned re-ranker ordered, the features that moved it up."""

from __future__ import annotations

from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from recommender.core.items import Item, Items


class Because(tuple):
    """A pick's reasons, kept as a range of shared arrays until an answer is written (most of the cost of a reason
    is making its dict): iterate to get {"stock_code", "description", "share", "baskets"}, largest share first.

    A tuple underneath (items, arrays, start, stop), so that an answer makes one per pick at the cost of a tuple;
    compared and hashed by identity, as any object."""

    __slots__ = ()
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __new__(
        cls, items: Items | list[Item], arrays: tuple[np.ndarray, np.ndarray, np.ndarray], start: int, stop: int
    ) -> Because:
        return tuple.__new__(cls, (items, arrays, start, stop))

    items = property(itemgetter(0), doc="The model's items.")
    arrays = property(itemgetter(1), doc="Basket rows, shares and counts of every pick's reasons.")
    start = property(itemgetter(2), doc="Where this pick's reasons start in the arrays.")
    stop = property(itemgetter(3), doc="Where they stop.")

    def __getnewargs__(self) -> tuple:
        return (self[0], self[1], self[2], self[3])  # copied and pickled as made (not by iterating: reasons)

    def __len__(self) -> int:
        return self[3] - self[2]

    def __repr__(self) -> str:
        return f"Because({self.as_list()!r})"

    @property
    def sources(self) -> np.ndarray:
        """Model rows of the basket items, largest share first."""
        return self[1][0][self[2] : self[3]]

    @property
    def shares(self) -> np.ndarray:
        """Their shares of the score."""
        return self[1][1][self[2] : self[3]]

    @property
    def counts(self) -> np.ndarray:
        """Training baskets holding both items (-1 for models trained before the counts were kept)."""
        return self[1][2][self[2] : self[3]]

    def __iter__(self) -> Any:
        items = self[0]
        for s, share, c in zip(self.sources.tolist(), self.shares.tolist(), self.counts.tolist()):
            yield {"stock_code": items[s].stock_code, "description": items[s].description, "share": share, "baskets": c}

    def as_list(self) -> list[dict]:
        """The reasons as JSON-ready dicts."""
        return list(self)


NO_REASONS = Because([], (np.empty(0, dtype=np.int64), np.empty(0), np.empty(0, dtype=np.int64)), 0, 0)
_because = tuple.__new__  # Because(...) without a Python call per pick
BOUNDS = np.arange(1025)  # where each pick's reasons start (searched for in the sorted picks)


def reasons(model: Any, scored: Any, rows: np.ndarray, totals: np.ndarray | None = None) -> list[Because]:
    """Per picked row (scored: the basket's merch_scores.Scores; totals: the rows' first-stage scores, when known):
    the basket items whose table weights make up its score, largest share first. The score is exactly the sum of
    those weights, so share = weight / score sums to 1 (an item scored 0 has none: an empty range)."""
    if totals is None:
        totals = scored(rows)
    m = len(rows)
    if not m:
        return []
    # The rows scored 0 are left out of the search (a list's `in`: a numpy reduction costs more on a few picks).
    zero = (totals == 0) if 0.0 in totals.tolist() else None
    # One pass over the table entries the basket read, finding the picks' entries: through a slot per item in a
    # model with few items (1 + the pick's place; 0 for the others), by binary search in one with many.
    targets = scored.targets
    if scored.dense is not None:
        # One byte per item for an answer of up to 126 picks: a quarter of the memory a request touches.
        slot = np.zeros(len(scored.dense), dtype=np.int8 if m < 127 else np.int32)
        slot[rows] = BOUNDS[1 : m + 1] if m < len(BOUNDS) else np.arange(1, m + 1)
        if zero is not None:
            slot[rows[zero]] = 0
        found = slot.take(targets)  # take: no conversion of the 32-bit rows, unlike indexing
        hit = found.nonzero()[0]
        pick = found.take(hit) - 1
    else:
        searched = rows if zero is None else np.where(zero, -1, rows)  # -1: no entry's item
        order = searched.argsort()
        sorted_rows = searched.take(order)
        at = np.minimum(sorted_rows.searchsorted(targets), m - 1)
        hit = (sorted_rows.take(at) == targets).nonzero()[0]
        pick = order.take(at.take(hit))
    ends = scored.slice_ends()
    if ends is None:
        entries = scored.positions.take(hit)
        # The basket item each entry belongs to: the table row holding it (no array of every entry's row needed).
        sources = model.table_indptr.searchsorted(entries, side="right") - 1
        weights = model.table_weight.take(entries)
    else:
        # The entries were read as one slice of the table per basket row: an entry's basket row is the slice it
        # falls in, its place in the table the slice's start plus its place in the slice.
        segment = ends[0].searchsorted(hit, side="right")
        entries = hit + ends[1].take(segment)
        sources = scored.basket.take(segment)
        weights = scored.weights.take(hit)
    # float32 weights over float64 totals: numpy divides in float64, as an explicit conversion would.
    shares = weights / totals.take(pick)
    # The entries come in table order (the basket's rows ascending), so a stable sort by pick, then share, leaves
    # equal shares in basket order.
    order = np.lexsort((-shares, pick))
    pick, sources, shares, entries = pick.take(order), sources.take(order), shares.take(order), entries.take(order)
    counts = model.table_count.take(entries) if model.table_count is not None else np.full(len(entries), -1)
    bounds = pick.searchsorted(BOUNDS[: m + 1] if m < len(BOUNDS) else np.arange(m + 1)).tolist()
    # One Because per pick, made by C-level maps (a pick without reasons gets an empty range: the same answer).
    arrays = (sources, shares, counts)
    return list(map(_because, repeat(Because), zip(repeat(model.items), repeat(arrays), bounds[:-1], bounds[1:])))


def ranked_by(model: Any, scored: Any, basket: np.ndarray, rows: np.ndarray) -> dict[int, list[dict]]:
    """Per picked row the re-ranker ordered: the features that moved it up most (its trees' path contributions)."""
    done = scored.reranked
    if not len(done.rows) or not len(rows):
        return {}
    at = np.minimum(np.searchsorted(done.rows, rows), len(done.rows) - 1)
    first_new = getattr(model, "first_new", len(model.items))  # new products: `like` says why; the trees know
    hit = (done.rows[at] == rows) & (rows < first_new)  # only the known items
    picked = rows[hit]
    explained = model.reranker.explain(model, basket[basket < first_new], done.features[at[hit]], picked)
    return dict(zip(picked.tolist(), explained))
