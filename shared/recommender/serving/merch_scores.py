"""A basket's candidates and scores for a merchandised answer (numpy only), read once per request: the first stage's
scores, the re-ranker's final ones (when the model has one), and the table entries the reasons are made of."""

from __future__ import annotations

from itertools import starmap
from typing import Any

import numpy as np

from recommender.serving import strongest
from recommender.serving.csr import entry_total, ranges
from recommender.serving.merch_policy import members
from recommender.serving.reranker import squash

# Up to this many items a basket's scores are one array over every item (as the plain path has them); beyond, kept
# for the items reached only (merchandising.DENSE_ITEMS decides per answer; this is the default).
DENSE_ITEMS = 65536


def row_bounds(model: Any) -> np.ndarray:
    """Each table row's [start, stop] (items x 2, int64: 16 bytes per item), made once per model (view)."""
    indptr = model.table_indptr
    made = model.__dict__.get("_row_bounds")
    if made is None or made[0] is not indptr:
        made = (indptr, np.stack([indptr[:-1], indptr[1:]], axis=1))
        model._row_bounds = made
    return made[1]


class Scores:
    """A basket's candidates (each basket item's nearest items in the Annoy index, ascending, none of the basket)
    and scores: every item's score is the sum of the table weights from the basket's items, 0 for items no basket
    item has a weight for. Dense (up to DENSE_ITEMS items), the scores are one array over every item, as the plain
    path computes them; else only the items reached are kept (a sort of the entries read, summed in the same order),
    so a request costs what its basket reads, not how many items the model holds."""

    def __init__(
        self, model: Any, basket: np.ndarray, dense: bool | None = None, allowed: np.ndarray | None = None
    ) -> None:
        n = len(model.items)
        if dense is None:
            dense = n <= DENSE_ITEMS
        indptr = model.table_indptr
        self.model = model
        self.basket = basket
        self._targets: np.ndarray | None = None
        self._positions: np.ndarray | None = None
        # With the entries read as one slice of the table per basket row (the masked dense path): each basket row's
        # [start, stop] in the table, and the weights read (aligned with targets); the reasons read them.
        self._bounds: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self._sources: np.ndarray | None = None
        # Whether the candidates are the eligible ones only (allowed: the request's mask over every item).
        self.eligible_only = False
        if (
            dense
            and allowed is not None
            and getattr(model, "reranker", None) is None
            and getattr(model, "first_new", n) >= n
            and entry_total(indptr, basket) <= strongest.BUDGET
        ):
            # The plain path's scoring (model.score_basket: the same sums in the same order), with the candidates
            # read through the request's mask in the same pass: the re-ranker and new products need them all. The
            # basket rows' entries are read as slices of the table (cheaper than one index array over them all).
            # Each basket row's [start, stop] in the table: one take of the rows' bounds (two fancy indexings, an
            # addition and two conversions before).
            self._bounds = row_bounds(model).take(basket, axis=0)
            bounds = self._bounds.tolist()
            table_target, table_weight = model.table_target, model.table_weight
            if len(bounds) <= 1:  # one slice (or none, for an empty basket): read in place
                part = slice(*bounds[0]) if bounds else slice(0, 0)
                targets, weights = table_target[part], table_weight[part]
            else:
                parts = list(starmap(slice, bounds))
                targets = np.concatenate(list(map(table_target.__getitem__, parts)))
                weights = np.concatenate(list(map(table_weight.__getitem__, parts)))
            self._targets, self.weights = targets, weights
            self.dense = np.bincount(targets, weights=weights, minlength=n)
            mark = np.zeros(n, dtype=bool)
            mark[model.near(basket).ravel()] = True
            mark &= allowed
            self.candidates = mark.nonzero()[0]
            self.eligible_only = True
            self.reranked = None
            self.final_candidates = self.dense.take(self.candidates)
            return
        if dense:
            self.candidates, self.dense, self._positions = model.score_basket(basket)
            self._rerank(model, basket)
            return
        self.dense = None
        self._positions = model.entries(basket)  # as model.score_basket reads them (a big basket's: bounded)
        targets = self.targets
        order = np.argsort(targets, kind="stable")
        ordered = targets[order]
        first = np.concatenate([[0], np.flatnonzero(np.diff(ordered)) + 1]) if len(ordered) else np.empty(0, np.int64)
        self.rows = ordered[first].astype(np.int64)
        self.sums = (
            np.add.reduceat(model.table_weight[self.positions].astype(np.float64)[order], first)
            if len(first)
            else np.empty(0)
        )
        found = np.unique(model.near(basket).ravel())
        first_new = getattr(model, "first_new", len(model.items))
        if first_new < len(model.items):  # new products: as in model.score_basket
            reached = self.rows[(self.rows >= first_new) & (self.sums > 0)]
            found = np.union1d(found, np.concatenate([reached, targets[self.sources >= first_new]]))
        self.candidates = found[~members(found, basket)]
        self._rerank(model, basket)

    def slice_ends(self) -> tuple[np.ndarray, np.ndarray] | None:
        """With the entries read as one slice per basket row: where each row's entries end among those read, and
        what turns a place among them into a place in the table (the row's start - its first place), per basket
        row (None otherwise)."""
        if self._bounds is None:
            return None
        stops = self._bounds[:, 1]
        ends = (stops - self._bounds[:, 0]).cumsum()
        return ends, stops - ends

    @property
    def positions(self) -> np.ndarray:
        """The table entries read (positions in table_target/weight/count, basket rows in order); made when first
        asked for."""
        if self._positions is None:
            self._positions = ranges(self.model.table_indptr, self.basket)
        return self._positions

    @property
    def targets(self) -> np.ndarray:
        """The item of each table entry read (aligned with positions); made when first asked for."""
        if self._targets is None:
            self._targets = self.model.table_target.take(self.positions)
        return self._targets

    @property
    def sources(self) -> np.ndarray:
        """The basket item of each table entry read (aligned with positions); made when first asked for."""
        if self._sources is None:
            self._sources = strongest.sources(self.model.table_indptr, self.basket, self.positions)
        return self._sources

    def _rerank(self, model: Any, basket: np.ndarray) -> None:
        """The re-ranker's final scores of the best candidates (the model's own, when it has one), and the final
        scores of every candidate (aligned with candidates)."""
        self.reranked = None
        first = self(self.candidates)
        self.final_candidates = first
        final_scores = getattr(model, "final_scores", None)
        if final_scores is None or getattr(model, "reranker", None) is None:
            return
        self.final_candidates, self.reranked = final_scores(basket, self.candidates, first, self.positions)
        if self.reranked is None:  # the model's hook left the first stage's order (only new products in the basket)
            self.final_candidates = first

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """The scores of rows."""
        if self.dense is not None:
            return self.dense[rows]
        if not len(self.rows):
            return np.zeros(len(rows))
        at = np.minimum(np.searchsorted(self.rows, rows), len(self.rows) - 1)
        return np.where(self.rows[at] == rows, self.sums[at], 0.0)

    def final(self, rows: np.ndarray) -> np.ndarray:
        """The ranking scores of rows: the re-ranker's for the candidates it re-ranked, the others' first-stage
        scores below them (serving/reranker.squash); the first-stage scores when the model has no re-ranker."""
        first = self(rows)
        if self.reranked is None:
            return first
        out = squash(first)
        done = self.reranked.rows
        if len(done) and len(rows):
            at = np.minimum(np.searchsorted(done, rows), len(done) - 1)
            hit = done[at] == rows
            out[hit] = self.reranked.scores[at[hit]]
        return out

    def deeper(self, basket: np.ndarray) -> np.ndarray:
        """Every item a basket item has a table entry for, other than the candidates and the basket."""
        reached = np.unique(self.targets).astype(np.int64)
        return reached[~members(reached, self.candidates) & ~members(reached, basket)]
