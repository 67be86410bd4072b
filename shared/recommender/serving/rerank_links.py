"""The re-ranker's link features: the item-item table's entries from a basket's items to its candidates, read
forwards (every entry of the basket's items, kept when its target is a candidate) or backwards (every entry into
the candidates, kept when its source is in the basket), whichever costs less. Both find the same entries; the
features are maxima and sums of whole counts over them, so they are the same bit for bit either way.

A table with the same number of entries into every item (Online Retail's: 100) makes the backwards read cost 100
entries per candidate, whatever the basket's size: a basket of 500 items reads 10,000 entries instead of 90,000.
"""

from __future__ import annotations

import numpy as np

from recommender.serving.csr import entry_sources, entry_total, ranges

LINKS = ("link_weight", "link_baskets", "link_probability", "link_cosine")  # the links' largest values, in order
INDEXED_ITEMS = 65536  # up to this many items, the backwards index is built at load (a 16-bit radix sort: fast)


class Incoming:
    """The table's entries by target: for each item, the entries into it (positions in the table) and their
    sources. Bound to one table (the arrays it was built from)."""

    def __init__(self, indptr: np.ndarray, target: np.ndarray) -> None:
        self.target = target
        n_items = len(indptr) - 1
        # A stable sort keeps each target's entries in source order; 16-bit keys sort by radix (a few ms).
        keys = target.astype(np.uint16) if n_items <= INDEXED_ITEMS else target
        self.entry = np.argsort(keys, kind="stable").astype(np.int32 if len(target) < 2**31 else np.int64)
        self.ptr = np.concatenate([[0], np.cumsum(np.bincount(target, minlength=n_items))])
        source = np.repeat(np.arange(n_items, dtype=np.int32), np.diff(indptr))
        self.source = source.take(self.entry)

    @classmethod
    def of(cls, indptr: np.ndarray, target: np.ndarray) -> Incoming | None:
        """The index of a table, or None when the table has more items than INDEXED_ITEMS (forwards only)."""
        return cls(indptr, target) if len(indptr) - 1 <= INDEXED_ITEMS else None


def link_entries(
    model: object,
    basket: np.ndarray,
    positions: np.ndarray,
    slots: object,
    incoming: Incoming | None,
    backwards: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The table entries from the basket's items (positions: those its first stage read) to the candidates: per
    entry, its candidate's slot, its position in the table and its source item (in no particular order). Read
    backwards when that reads under half as many entries (backwards=True/False: always/never, when the index is
    there), never when positions are a bounded read."""
    candidates = slots.candidates
    indptr = model.table_indptr
    if incoming is not None and incoming.target is model.table_target and backwards is not False:
        lengths = incoming.ptr[candidates + 1] - incoming.ptr[candidates]
        # a backwards entry costs about two forwards; backwards finds every entry from the basket's items, the
        # same as forwards only when positions are all of them (not a big basket's bounded read: forwards then)
        if (backwards or 2 * int(lengths.sum()) < len(positions)) and entry_total(indptr, basket) == len(positions):
            into = ranges(incoming.ptr, candidates)
            sources = incoming.source.take(into)
            member = np.zeros(len(incoming.ptr) - 1, dtype=bool)
            member[basket] = True
            hit = np.flatnonzero(member.take(sources))
            slot = np.repeat(np.arange(len(candidates)), lengths).take(hit)
            return slot, incoming.entry.take(into.take(hit)), sources.take(hit)
    at, hit = slots(model.table_target.take(positions))
    hit = np.flatnonzero(hit)
    entries = positions.take(hit)
    return at.take(hit), entries, entry_sources(indptr, entries)


def link_features(
    model: object,
    basket: np.ndarray,
    positions: np.ndarray,
    slots: object,
    incoming: Incoming | None,
    pop1: np.ndarray,
    x: np.ndarray,
    backwards: bool | None = None,
) -> None:
    """The link features (columns 3-8 of x) of the candidates; pop1: every item's popularity, at least 1."""
    m = len(slots.candidates)
    slot, entries, sources = link_entries(model, basket, positions, slots, incoming, backwards)
    if not len(slot):
        return
    count = model.table_count.take(entries).astype(np.float64) if model.table_count is not None else np.zeros(len(slot))
    pop_source = pop1.take(sources)
    pop_target = pop1.take(slots.candidates).take(slot)
    # Each largest value by its own 1-d maximum.at (numpy's fast path; one over interleaved columns is slower).
    best = np.full((len(LINKS), m), -np.inf)
    np.maximum.at(best[0], slot, model.table_weight.take(entries).astype(np.float64))
    np.maximum.at(best[1], slot, count)
    np.maximum.at(best[2], slot, count / pop_source)
    np.maximum.at(best[3], slot, count / np.sqrt(pop_source * pop_target))
    x[:, [3, 4, 6, 7]] = np.where(np.isinf(best), 0.0, best).T
    # Sums of whole counts: exact in any order.
    x[:, 5] = np.bincount(slot, weights=count, minlength=m)
    x[:, 8] = np.bincount(slot, minlength=m)
