"""Merchandising at answer time: the product feed and the rules compiled into arrays once per (model, feed, rules)
version, request options, always-full answers and a reason per pick (numpy only: no pandas, no scipy).

An answer is chosen in levels, each filtered by the same eligibility (in stock, not blocked, not paired away from
the basket, not in the basket, passing the request's filters): the model's candidates (each basket item's nearest
items in the Annoy index) by score, then every other item the basket's items have a table weight for, then the
most popular items; so it holds exactly n items whenever n items are eligible. The pins the basket triggers are
chosen first (they count toward max_per_category) and put in at their positions once the rest is chosen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from recommender.core import registry
from recommender.core.errors import InvalidInput, RecommenderError
from recommender.core.feed_and_rules import (
    FEED_FILE,
    MAX_TOTAL_FACTOR,
    MIN_TOTAL_FACTOR,
    RULES_FILE,
    SELECTOR_KEYS,
    SHOWN,
    brand_key,
    category_key,
    category_keys,
    feed_items,
    in_force,
    in_force_key,
)
from recommender.core.items import Item, Items
from recommender.core.storage import Storage
from recommender.serving import new_items
from recommender.serving.reranker import squash

log = logging.getLogger("recommender")

MODEL, POPULAR, PINNED, NEW = "model", "popular", "pinned", "new"
SOURCES = (MODEL, POPULAR, PINNED, NEW)  # new: a product the model never saw, placed by its twins (new_items.py)
# Up to this many items a basket's scores are one array over every item (as the plain path has them); beyond, kept
# for the items reached only.
DENSE_ITEMS = 65536


@dataclass(frozen=True)
class Options:
    """What a request may ask beyond the basket and n (all optional; explain says whether to give reasons)."""

    exclude: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    max_price_ratio: float | None = None
    min_confidence: float | None = None
    max_per_category: int | None = None
    explain: bool = False

    def __post_init__(self) -> None:
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise InvalidInput(f"price_min ({self.price_min:g}) is greater than price_max ({self.price_max:g})")
        for name in ("price_min", "price_max", "max_price_ratio"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise InvalidInput(f"{name} must be a number >= 0, not {value}")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise InvalidInput(f"min_confidence must be between 0 and 1, not {self.min_confidence}")
        if self.max_per_category is not None and self.max_per_category < 1:
            raise InvalidInput(f"max_per_category must be at least 1, not {self.max_per_category}")

    @property
    def filters(self) -> bool:
        """Whether any option narrows the eligible items."""
        return bool(
            self.exclude
            or self.categories
            or self.exclude_categories
            or self.price_min is not None
            or self.price_max is not None
            or self.max_price_ratio is not None
        )


class Pick(NamedTuple):
    """One recommended item with where it came from; item and score as in serving.model.Scored."""

    item: Item
    score: float  # the ranking score: the model's score times the boost, if any
    source: str  # model, popular or pinned
    confidence: float | None
    # With explain: the basket items making up the score, {"stock_code", "description", "share", "baskets"}:
    # share = that item's table weight / the score (they sum to 1; negative when the regression weighs the
    # pairing down), baskets = training baskets holding both.
    because: Because | None
    boost: float | None  # the rules' factor when it is not 1
    row: int
    attributes: dict  # what the feed says of the item (and its price), when known
    # With explain, for items the learned re-ranker ordered: the features that moved it up most, in words.
    ranked_by: list[dict] | None = None
    like: Item | None = None  # a new product's nearest known twin (source new)


class Policy:
    """The feed and the rules of one (model, feed, rules) combination, as arrays aligned with the model's rows."""

    def __init__(
        self,
        items: Items,
        prices: np.ndarray | None,
        feed: dict | None,
        rules: dict | None,
        feed_version: str | None = None,
        rules_version: str | None = None,
        currency: str | None = None,
        placement: Any = None,
    ) -> None:
        n = len(items)
        self.items = items
        self.currency = currency  # of prices the feed gives no currency for (setting CURRENCY)
        # Rows from first_new on are new products placed from the feed (serving/new_items.py).
        self.placement = placement
        self.first_new = n - (len(placement) if placement is not None else 0)
        self.feed_version = feed_version
        self.rules_version = rules_version
        self.price = np.full(n, np.nan) if prices is None else np.asarray(prices, dtype=np.float64).copy()
        self.eligible = np.ones(n, dtype=bool)
        self.popular = np.asarray(items.most_popular(), dtype=np.int64)  # rows, most popular first
        self.popularity = np.asarray(items.popularity, dtype=np.float64)
        self.feed_rows: dict[int, dict] = {}
        self._shown: dict[int, dict] = {}
        self._category_masks: dict[tuple[str, ...], np.ndarray] = {}
        self.category_rows: dict[str, np.ndarray] = {}
        self.brand_rows: dict[str, np.ndarray] = {}
        self.leaf = np.full(n, -1, dtype=np.int64)  # the full category path's id, for max_per_category
        self.leaf_names: list[str] = []  # each id's category path, as the feed wrote it
        self.factor: np.ndarray | None = None
        self.pairs: dict[int, list[np.ndarray]] = {}  # basket row -> rows it forbids (do_not_pair)
        self.pins: dict[int, list[tuple[int, int]]] = {}  # basket row -> (pinned row, position)
        if feed:
            self._compile_feed(feed["items"])
        if rules:
            self._compile_rules(rules)
        # Whether answers without options can differ from the plain model's: if not, they skip all of this.
        self.restricts = bool(
            feed or (rules and any(rules[k] for k in ("do_not_pair", "pin", "boost"))) or not self.eligible.all()
        )

    def _compile_feed(self, items: dict[str, dict]) -> None:
        index = self.items.index
        categories: dict[str, list[int]] = {}
        brands: dict[str, list[int]] = {}
        leaves: dict[str, int] = {}
        for code, attributes in items.items():
            i = index.get(code)
            if i is None:
                continue
            self.feed_rows[i] = attributes
            if attributes.get("availability") == "out_of_stock":
                self.eligible[i] = False
            price = attributes.get("price")
            # A price stored before prices were bounded may be infinite (JSON's Infinity): unknown, not shown.
            if isinstance(price, (int, float)) and 0 <= price < float("inf"):
                self.price[i] = price
            if attributes.get("category"):
                for key in category_keys(attributes["category"]):
                    categories.setdefault(key, []).append(i)
                leaf = category_key(attributes["category"])
                if leaf not in leaves:
                    leaves[leaf] = len(leaves)
                    self.leaf_names.append(attributes["category"])
                self.leaf[i] = leaves[leaf]
            if attributes.get("brand"):
                brands.setdefault(brand_key(attributes["brand"]), []).append(i)
        self.category_rows = {k: np.asarray(sorted(v), dtype=np.int64) for k, v in categories.items()}
        self.brand_rows = {k: np.asarray(sorted(v), dtype=np.int64) for k, v in brands.items()}

    def rows(self, selector: dict[str, list[str]]) -> np.ndarray:
        """The model rows a rule's selector names (codes, categories or brands unknown here select nothing)."""
        ((key, values),) = selector.items()
        found: list[np.ndarray] = []
        for value in values:
            if key == "code":
                i = self.items.index.get(value)
                found.append(np.asarray([] if i is None else [i], dtype=np.int64))
            elif key == "category":
                found.append(self.category_rows.get(category_key(value), np.empty(0, dtype=np.int64)))
            else:
                found.append(self.brand_rows.get(brand_key(value), np.empty(0, dtype=np.int64)))
        return np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)

    def categories_mask(self, names: tuple[str, ...]) -> np.ndarray:
        """Items in any of the named categories (a level's name or a path); remembered for the last few hundred
        distinct requests' lists (do not change the array)."""
        mask = self._category_masks.get(names)
        if mask is None:
            mask = np.zeros(len(self.eligible), dtype=bool)
            for name in names:
                rows = self.category_rows.get(category_key(name))
                if rows is not None:
                    mask[rows] = True
            if len(self._category_masks) >= 256:
                self._category_masks.clear()
            self._category_masks[names] = mask
        return mask

    def _compile_rules(self, rules: dict) -> None:
        block = rules["block"]
        for key, kind in (("codes", "code"), ("categories", "category"), ("brands", "brand")):
            if block.get(key):
                self.eligible[self.rows({kind: block[key]})] = False
        for rule in rules["do_not_pair"]:
            forbidden = self.rows(rule["item"])
            if len(forbidden):
                for b in self.rows(rule["basket"]).tolist():
                    self.pairs.setdefault(b, []).append(forbidden)
        for pin in rules["pin"]:
            target = self.items.index.get(pin["item"]["code"][0])
            if target is not None:
                for b in self.rows(pin["basket"]).tolist():
                    self.pins.setdefault(b, []).append((target, int(pin["position"])))
        if rules["boost"]:
            self.factor = np.ones(len(self.eligible))
            for entry in rules["boost"]:
                factor = float(entry["factor"])
                if not 0 < factor < float("inf"):  # a rules.json written by hand: uploads refuse these
                    continue
                # However many factors stack on one item, their product stays within bounds (held at each step,
                # so it never overflows on the way): every score stays a finite number.
                rows = self.rows({k: entry[k] for k in SELECTOR_KEYS if k in entry})
                product = self.factor[rows] * min(max(factor, MIN_TOTAL_FACTOR), MAX_TOTAL_FACTOR)
                self.factor[rows] = np.clip(product, MIN_TOTAL_FACTOR, MAX_TOTAL_FACTOR)

    def category_warnings(self, options: Options) -> list[str]:
        """What the answer says of categories the request names and no item of the feed is in."""
        out = []
        for key, effect in (("categories", "no item can match it"), ("exclude_categories", "it excludes nothing")):
            for name in getattr(options, key):
                if category_key(name) not in self.category_rows:
                    where = "in the product feed" if self.feed_version else "known: no product feed gives categories"
                    out.append(f"{key}: category {name!r} is not {where}; {effect}")
        return out

    def eligibility(self, basket: np.ndarray, options: Options) -> Eligibility:
        """Which items may be recommended with this basket under these options, asked of a few rows at a time."""
        return Eligibility(self, basket, options)

    def boosted(self, rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Scores after the rules' factors; a negative score is divided instead, so a boost always raises."""
        if self.factor is None:
            return scores
        f = self.factor[rows]
        return np.where(scores >= 0, scores * f, scores / f)

    def shown(self, row: int) -> dict:
        """The feed attributes an answer shows for an item, and its price (from the feed, else the training file);
        built once per item (callers must not change it). Only the attributes the answers declare (SHOWN), whatever
        else a feed file stored by hand may hold."""
        attributes = self._shown.get(row)
        if attributes is None:
            attributes = {k: v for k, v in self.feed_rows.get(row, {}).items() if k in SHOWN}
            price = self.price[row]
            if price == price:
                attributes["price"] = float(price)
                if self.currency and "currency" not in attributes:
                    attributes["currency"] = self.currency
            self._shown[row] = attributes
        return attributes


def load_feed(storage: Storage, version: str, known: Container[str] | None = None) -> dict:
    """A feed version's stored items, checked against its manifest: only those of codes in known, when given
    ({"items": {...}, "dropped": how many others it lists})."""
    data = registry.read_verified(storage, version, FEED_FILE, registry.FEED)
    try:
        items, dropped = feed_items(data, known)
    except (ValueError, KeyError, TypeError) as err:
        raise registry.FEED.error(f"feed version {version} cannot be read: {err}") from None
    return {"items": items, "dropped": dropped}


def load_rules(storage: Storage, version: str) -> dict:
    """A rules version's stored rules, checked against its manifest."""
    return _load(storage, version, RULES_FILE, registry.RULES)


def _load(storage: Storage, version: str, name: str, kind: registry.Kind) -> dict:
    data = registry.read_verified(storage, version, name, kind)
    try:
        return json.loads(data)
    except ValueError as err:
        raise kind.error(f"{kind.noun} version {version} cannot be read: {err}") from None


def _members(rows: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which of rows are in sorted_set (ascending), by binary search: no array the size of the model."""
    if not len(sorted_set):
        return np.zeros(len(rows), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, rows), len(sorted_set) - 1)
    return sorted_set[at] == rows


class Eligibility:
    """One request's eligibility (feed and rules, do_not_pair with the basket, the request's filters, not in the
    basket, not picked already), checked on the few rows each step considers: its cost follows the answer, not
    the number of items."""

    def __init__(self, policy: Policy, basket: np.ndarray, options: Options) -> None:
        self.policy = policy
        self.options = options
        excluded = [basket]
        for b in basket.tolist() if policy.pairs else ():
            excluded.extend(policy.pairs.get(b, ()))
        if options.exclude:
            index = policy.items.index
            excluded.append(np.asarray([index[c] for c in options.exclude if c in index], dtype=np.int64))
        self.taken: list[np.ndarray] = []
        self.within = policy.categories_mask(options.categories) if options.categories else None
        self.outside = policy.categories_mask(options.exclude_categories) if options.exclude_categories else None
        self.price_max = options.price_max
        if options.max_price_ratio is not None and len(basket):
            known = policy.price[basket]
            known = known[~np.isnan(known)]
            if len(known):  # a basket without a known price cannot bound anything
                bound = options.max_price_ratio * float(known.max())
                self.price_max = bound if self.price_max is None else min(bound, self.price_max)
        self.mask = None
        if len(policy.eligible) <= DENSE_ITEMS:
            # Few items: one mask over it is cheaper than binary searches.
            self.mask = policy.eligible.copy()
            for rows in excluded:
                self.mask[rows] = False
            if (
                self.within is not None
                or self.outside is not None
                or options.price_min is not None
                or self.price_max is not None
            ):
                self.mask &= self._filters(slice(None), len(self.mask))
        else:
            self.excluded = np.unique(np.concatenate(excluded)) if len(excluded) > 1 else basket

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Which of rows may still be picked."""
        if self.mask is not None:
            return self.mask[rows]
        ok = self.policy.eligible[rows] & ~_members(rows, self.excluded)
        for taken in self.taken:
            ok &= ~_members(rows, taken)
        return ok & self._filters(rows, len(rows))

    def _filters(self, rows: np.ndarray | slice, size: int) -> np.ndarray:
        """The request's category and price filters on rows (or every item: slice(None))."""
        ok = np.ones(size, dtype=bool)
        if self.within is not None:
            ok &= self.within[rows]
        if self.outside is not None:
            ok &= ~self.outside[rows]
        # Unknown prices fail every price filter: nothing is promised about them.
        if self.options.price_min is not None:
            ok &= self.policy.price[rows] >= self.options.price_min
        if self.price_max is not None:
            ok &= self.policy.price[rows] <= self.price_max
        return ok

    def take(self, rows: np.ndarray) -> None:
        """Rows now picked: not eligible again."""
        if not len(rows):
            return
        if self.mask is not None:
            self.mask[rows] = False
        else:
            self.taken.append(np.sort(rows))


class Scores:
    """A basket's candidates (each basket item's nearest items in the Annoy index, ascending, none of the basket)
    and scores: every item's score is the sum of the table weights from the basket's items, 0 for items no basket
    item has a weight for. Up to DENSE_ITEMS items, the scores are one array over every item, as the plain path
    computes them; beyond, only the items reached are kept (a sort of the entries read, summed in the same order),
    so a request costs what its basket reads, not how many items the model holds."""

    def __init__(self, model: Any, basket: np.ndarray) -> None:
        indptr = model.table_indptr
        lengths = indptr[basket + 1] - indptr[basket]
        self.sources = np.repeat(basket, lengths)
        if len(model.items) <= DENSE_ITEMS:
            self.candidates, self.dense, self.positions = model.score_basket(basket)
            self.targets = model.table_target[self.positions]
            self._rerank(model, basket)
            return
        self.dense = None
        starts = indptr[basket]
        self.positions = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        self.targets = model.table_target[self.positions]
        order = np.argsort(self.targets, kind="stable")
        ordered = self.targets[order]
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
            found = np.union1d(found, np.concatenate([reached, self.targets[self.sources >= first_new]]))
        self.candidates = found[~_members(found, basket)]
        self._rerank(model, basket)

    def _rerank(self, model: Any, basket: np.ndarray) -> None:
        """The re-ranker's final scores of the best candidates (the model's own, when it has one)."""
        self.reranked = None
        final_scores = getattr(model, "final_scores", None)
        if final_scores is None or getattr(model, "reranker", None) is None:
            return
        _final, self.reranked = final_scores(basket, self.candidates, self(self.candidates), self.positions)

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
        return reached[~_members(reached, self.candidates) & ~_members(reached, basket)]


def answer(
    model: Any, basket: np.ndarray, n: int, options: Options | None, policy: Policy, learned: bool = True
) -> tuple[list[Pick], bool, list[str]]:
    """The picks for a basket of known rows (possibly empty, sorted), best first, whether fewer than n were
    eligible, and warnings about the request (categories no item is in, pins beyond max_per_category).
    learned=False: nothing the model learned, the popular items only (an experiment's no-model control), under the
    same feed, rules (pins included) and options."""
    options = options or Options()
    warnings = policy.category_warnings(options) if options.categories or options.exclude_categories else []
    ok = policy.eligibility(basket, options)
    cap = options.max_per_category
    taken: dict[int, int] = {}  # picks per category, with max_per_category
    # Pins are placed first: they count toward max_per_category, and the rest of the answer fills around them.
    pinned = _pinned(policy, basket, n, ok) if policy.pins and len(basket) else {}
    if pinned:
        ok.take(np.fromiter(pinned, dtype=np.int64, count=len(pinned)))
        warnings += _count_pins(policy, pinned, cap, taken)
    k = n - len(pinned)  # the items to choose besides the pins
    rows = np.empty(0, dtype=np.int64)
    scores = np.empty(0)
    scored = None
    if len(basket) and learned:
        scored = Scores(model, basket)
        candidates = scored.candidates
        most = new_items.per_answer(basket, policy.first_new) if policy.first_new < len(policy.eligible) else None
        if most is not None and cap is not None:  # _best counts the categories it picks: cap new products first
            candidates = new_items.capped(candidates, scored.final, ok, policy.first_new, most)
        rows, scores = _best(candidates, scored.final(candidates), ok, policy, k, cap, taken)
        if most is not None and cap is None and np.count_nonzero(rows >= policy.first_new) > most:
            candidates = new_items.capped(candidates, scored.final, ok, policy.first_new, most)  # after the fact
            rows, scores = _best(candidates, scored.final(candidates), ok, policy, k, cap, taken)
        if len(rows) < k:
            # Deeper than the candidates: every other item the basket's items have a table entry for. Merged by
            # score (stable, so popularity still breaks ties) to keep the answer sorted.
            deeper = scored.deeper(basket)
            more, more_scores = _best(deeper, scored.final(deeper), ok, policy, k - len(rows), cap, taken)
            if len(more):
                rows, scores = np.concatenate([rows, more]), np.concatenate([scores, more_scores])
                order = np.argsort(-scores, kind="stable")
                rows, scores = rows[order], scores[order]
        if len(scores) and scores[0] <= 0:
            # Nothing learned goes with the basket (no positive score): popular items instead, flagged fallback.
            rows, scores = rows[:0], scores[:0]
            taken.clear()
            _count_pins(policy, pinned, cap, taken)
    ok.take(rows)
    source = np.zeros(len(rows), dtype=np.int8)  # index into SOURCES
    if len(rows) < k:
        # The most popular items that pass the same filters: scored no higher than the last pick, or, when the model
        # picked nothing (nothing known or learned, or everything filtered), by popularity (the plain fallback's).
        extra = _popular(policy, ok, k - len(rows), cap, taken)
        if len(rows):
            extra_scores = np.full(len(extra), min(0.0, float(scores[-1])))
        else:
            best = max(policy.popularity[policy.popular[0]], 1.0) if len(policy.popular) else 1.0
            extra_scores = policy.boosted(extra, np.round(policy.popularity[extra] / best, 4))
            order = np.argsort(-extra_scores, kind="stable")
            extra, extra_scores = extra[order], extra_scores[order]
        ok.take(extra)
        rows, scores = np.concatenate([rows, extra]), np.concatenate([scores, extra_scores])
        source = np.concatenate([source, np.ones(len(extra), dtype=np.int8)])
    if policy.first_new < len(policy.eligible):
        source[(rows >= policy.first_new) & (source == 0)] = 3
    if pinned:
        # Without the model's scores (learned=False), a pin scores its popularity, as the popular picks do.
        rows, scores, source = _pin(
            pinned, rows, scores, source, scored.final if scored is not None else partial(_popularity_score, policy)
        )
    rows, scores, source = rows[:n], np.round(scores[:n], 4), source[:n]
    confidence = _confidence(model, policy, rows, source, scored)
    if options.min_confidence is not None and confidence is not None:
        # Last, on the answer as it stands (pins included): confidence falls with the rank and rises with the
        # score, so items further down the list would not pass either.
        keep = confidence >= options.min_confidence
        if not keep.all():  # the ones left move up: their confidence at their new rank (no lower)
            rows, scores, source = rows[keep], scores[keep], source[keep]
            confidence = _confidence(model, policy, rows, source, scored)
    reasons = _reasons(model, scored, rows[source != 1]) if options.explain and scored is not None else {}
    items, shown = model.items, policy.shown
    row_list = rows.tolist()
    confidence = confidence.tolist() if confidence is not None else [None] * len(rows)
    boosts = (
        [None if f == 1 else f for f in policy.factor[rows].tolist()]
        if policy.factor is not None
        else [None] * len(rows)
    )
    because = [reasons.get(row, NO_REASONS) for row in row_list] if options.explain else [None] * len(rows)
    ranked_by = (
        _ranked_by(model, scored, basket, rows)
        if options.explain and scored is not None and scored.reranked is not None
        else {}
    )
    placement, first_new = policy.placement, policy.first_new
    picks = [
        Pick(
            items[row],
            score,
            SOURCES[src],
            conf,
            why,
            boost,
            row,
            shown(row),
            ranked_by.get(row),
            items[int(placement.twins[row - first_new, 0])] if row >= first_new else None,
        )
        for row, score, src, conf, why, boost in zip(
            row_list, scores.tolist(), source.tolist(), confidence, because, boosts
        )
    ]
    return picks, len(picks) < n, warnings


def _ranked_by(model: Any, scored: Scores, basket: np.ndarray, rows: np.ndarray) -> dict[int, list[dict]]:
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


def _popular(policy: Policy, ok: Eligibility, k: int, cap: int | None, taken: dict[int, int]) -> np.ndarray:
    """The k most popular eligible rows (within the category cap), read a block of the popularity order at a time."""
    found: list[np.ndarray] = []
    need, start, block = k, 0, max(64, 4 * k)
    while need > 0 and start < len(policy.popular):
        chunk = policy.popular[start : start + block]
        chunk = _capped(chunk[ok(chunk)], policy, need, cap, taken)
        found.append(chunk)
        need -= len(chunk)
        start += block
        block *= 4
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def _popularity_score(policy: Policy, rows: np.ndarray) -> np.ndarray:
    """Each row's popularity relative to the best seller's (the popular picks' score)."""
    best = max(policy.popularity[policy.popular[0]], 1.0) if len(policy.popular) else 1.0
    return np.round(policy.popularity[rows] / best, 4)


def _pinned(policy: Policy, basket: np.ndarray, n: int, ok: Eligibility) -> dict[int, int]:
    """The pins the basket triggers ({row: position}), where the item passes every filter and the position is
    within the answer."""
    pinned: dict[int, int] = {}
    for b in basket.tolist():
        for row, position in policy.pins.get(b, ()):
            if position <= n and (row in pinned or ok(np.asarray([row], dtype=np.int64))[0]):
                pinned[row] = min(position, pinned.get(row, position))
    return pinned


def _count_pins(policy: Policy, pinned: dict[int, int], cap: int | None, taken: dict[int, int]) -> list[str]:
    """Count the pinned items toward max_per_category (in taken); warnings for categories the pins alone take
    beyond it (the pins stay: a merchandiser's choice)."""
    if cap is None:
        return []
    for row in pinned:
        category = int(policy.leaf[row])
        if category >= 0:
            taken[category] = taken.get(category, 0) + 1
    return [
        f"max_per_category: {count} pinned items are in category {policy.leaf_names[category]!r}, more than "
        f"{cap}; the pins stay, and no other item of it is recommended"
        for category, count in taken.items()
        if count > cap
    ]


def _pin(
    pinned: dict[int, int],
    rows: np.ndarray,
    scores: np.ndarray,
    source: np.ndarray,
    scored: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pinned items put in at their positions whatever their score (a merchandiser's choice), lowest position
    first, so pins do not shift one another."""
    entries = list(zip(rows.tolist(), scores.tolist(), source.tolist()))
    pinned_rows = np.fromiter(pinned, dtype=np.int64, count=len(pinned))
    pinned_scores = dict(zip(pinned_rows.tolist(), scored(pinned_rows).tolist()))
    for row, position in sorted(pinned.items(), key=lambda p: (p[1], p[0])):
        entries.insert(position - 1, (row, pinned_scores[row], 2))
    r, sc, so = zip(*entries)
    return np.asarray(r, dtype=np.int64), np.asarray(sc, dtype=np.float64), np.asarray(so, dtype=np.int8)


def _best(
    rows: np.ndarray,
    scores: np.ndarray,
    ok: Eligibility,
    policy: Policy,
    k: int,
    cap: int | None,
    taken: dict[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The k best eligible rows (scores aligned with rows) by boosted score (stable), within the per-category cap."""
    keep = ok(rows)
    rows = rows[keep]
    scores = policy.boosted(rows, scores[keep])
    if cap is None and len(rows) > 2 * k > 0:
        # Only the k best are needed: every row scoring at least the k-th best score (ties included, still in row
        # order), then a stable sort of those few gives what a full stable sort would.
        kth = -np.partition(-scores, k - 1)[k - 1]
        top = np.flatnonzero(scores >= kth)
        order = top[np.argsort(-scores[top], kind="stable")][:k]
        return rows[order], scores[order]
    order = np.argsort(-scores, kind="stable")
    rows, scores = rows[order], scores[order]
    if cap is None:
        return rows[:k], scores[:k]
    keep = _capped(rows, policy, k, cap, taken, positions=True)
    return rows[keep], scores[keep]


def _capped(
    rows: np.ndarray, policy: Policy, k: int, cap: int | None, taken: dict[int, int], positions: bool = False
) -> np.ndarray:
    """The first k rows (or their positions) that keep every category within cap picks (items without a category
    are not limited); taken counts the picks per category so far and is updated."""
    if cap is None:
        return np.arange(min(k, len(rows))) if positions else rows[:k]
    keep = []
    for j, category in enumerate(policy.leaf[rows].tolist()):
        if len(keep) >= k:
            break
        if category >= 0:
            if taken.get(category, 0) >= cap:
                continue
            taken[category] = taken.get(category, 0) + 1
        keep.append(j)
    keep_at = np.asarray(keep, dtype=np.int64)
    return keep_at if positions else rows[keep_at]


def _confidence(
    model: Any, policy: Policy, rows: np.ndarray, source: np.ndarray, scored: Scores | None
) -> np.ndarray | None:
    """The model's calibrated confidence of each pick at its rank (1 = first), from the model's own score (before
    any boost; for popular picks, popularity / top popularity); None when the model has no calibration code."""
    confidence = getattr(model, "confidence", None)
    if confidence is None:
        return None
    if not len(rows):
        return np.empty(0)  # everything filtered out (and scores_all is None for an empty basket)
    ranks = np.arange(1, len(rows) + 1)
    # Without the model's scores (learned=False, pins included), every pick's confidence is a popular item's.
    popular = source == 1 if scored is not None else np.ones(len(rows), dtype=bool)
    if not popular.any():
        return np.round(confidence(scored.final(rows), ranks), 4)
    out = np.empty(len(rows))
    if not popular.all():
        model_rows = ~popular
        out[model_rows] = confidence(scored.final(rows[model_rows]), ranks[model_rows])
    if popular.any():
        top = max(float(policy.popularity[policy.popular[0]]), 1.0)
        out[popular] = confidence(policy.popularity[rows[popular]] / top, ranks[popular], popular=True)
    return np.round(out, 4)


class Because:
    """A pick's reasons, kept as a range of shared arrays until an answer is written (most of the cost of a reason
    is making its dict): iterate to get {"stock_code", "description", "share", "baskets"}, largest share first."""

    __slots__ = ("items", "arrays", "start", "stop")

    def __init__(
        self, items: Items | list[Item], arrays: tuple[np.ndarray, np.ndarray, np.ndarray], start: int, stop: int
    ) -> None:
        self.items, self.arrays, self.start, self.stop = items, arrays, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def sources(self) -> np.ndarray:
        """Model rows of the basket items, largest share first."""
        return self.arrays[0][self.start : self.stop]

    @property
    def shares(self) -> np.ndarray:
        """Their shares of the score."""
        return self.arrays[1][self.start : self.stop]

    @property
    def counts(self) -> np.ndarray:
        """Training baskets holding both items (-1 for models trained before the counts were kept)."""
        return self.arrays[2][self.start : self.stop]

    def __iter__(self) -> Any:
        items = self.items
        for s, share, c in zip(self.sources.tolist(), self.shares.tolist(), self.counts.tolist()):
            yield {"stock_code": items[s].stock_code, "description": items[s].description, "share": share, "baskets": c}

    def as_list(self) -> list[dict]:
        """The reasons as JSON-ready dicts."""
        return list(self)


NO_REASONS = Because([], (np.empty(0, dtype=np.int64), np.empty(0), np.empty(0, dtype=np.int64)), 0, 0)


def _reasons(model: Any, scored: Scores, rows: np.ndarray) -> dict[int, Because]:
    """Per picked row: the basket items whose table weights make up its score, largest share first. The score is
    exactly the sum of those weights, so share = weight / score sums to 1 (an item scored 0 has no reasons)."""
    totals = scored(rows)
    rows = rows[totals != 0]
    if not len(rows):
        return {}
    # One pass over the table entries the basket read, marking the picks' entries: through a slot per item in a
    # model with few items, by binary search in one with many.
    if scored.dense is not None:
        slot = np.full(len(scored.dense), -1, dtype=np.int64)
        slot[rows] = np.arange(len(rows))
        found = slot[scored.targets]
        hit = found >= 0
        pick = found[hit]
    else:
        order = np.argsort(rows)
        sorted_rows = rows[order]
        at = np.minimum(np.searchsorted(sorted_rows, scored.targets), len(rows) - 1)
        hit = sorted_rows[at] == scored.targets
        pick = order[at[hit]]
    sources = scored.sources[hit]
    entries = scored.positions[hit]
    shares = model.table_weight[entries].astype(np.float64) / totals[totals != 0][pick]
    order = np.lexsort((sources, -shares, pick))
    pick, sources, shares, entries = pick[order], sources[order], shares[order], entries[order]
    counts = model.table_count[entries] if model.table_count is not None else np.full(len(entries), -1)
    bounds = np.searchsorted(pick, np.arange(len(rows) + 1))
    items = model.items
    arrays = (sources, shares, counts)
    return {
        row: Because(items, arrays, a, b)
        for row, a, b in zip(rows.tolist(), bounds[:-1].tolist(), bounds[1:].tolist())
        if b > a
    }


class Merchandiser:
    """Follows the feed and rules pointers for a ModelHolder: loads a version once when its pointer moves, and
    gives the view of the model to serve. A feed or rules version that cannot be loaded is reported and the one
    loaded before stays in force (none at first): serving never stops for it."""

    def __init__(self, storage: Storage, currency: str | None = None) -> None:
        self.storage = storage
        self.currency = currency or None
        self.loaded: dict[str, tuple[str | None, dict | None]] = {"feed": (None, None), "rules": (None, None)}
        self.errors: dict[str, str | None] = {"feed": None, "rules": None}
        self._feed_model: str | None = None  # the model whose items the loaded feed was kept for
        self._in_force: tuple = ()  # which timed rules the view serving was built with
        self.clock = lambda: datetime.now(UTC)
        self._placed: tuple[tuple | None, Any] = (None, None)  # (model, feed) versions -> model with new products

    def _follow(self, kind: registry.Kind, load: Any, again: bool = False) -> tuple[str | None, dict | None]:
        pointer = registry.active(self.storage, kind)
        version = pointer.version if pointer else None
        if version != self.loaded[kind.prefix][0] or (again and version):
            try:
                self.loaded[kind.prefix] = (version, load(self.storage, version) if version else None)
                self.errors[kind.prefix] = None
                log.info("serving %s version %s", kind.noun, version)
            except RecommenderError as err:
                if err.message != self.errors[kind.prefix]:
                    log.warning("%s; keeping %s version %s", err.message, kind.noun, self.loaded[kind.prefix][0])
                self.errors[kind.prefix] = err.message
        return self.loaded[kind.prefix]

    def _load_feed(self, plain: Any) -> Any:
        def load(storage: Storage, version: str) -> dict:
            # Every item is read: the ones the model does not know are new products, placed by their twins
            # (new_items.placed), and those it cannot place are dropped: a feed listing a million codes the
            # model never recommends costs this process nothing once placed.
            feed = load_feed(storage, version)
            self._feed_model = plain.version
            return feed

        return load

    def _with_new_items(self, plain: Any, feed_version: str | None, feed: dict | None) -> Any:
        """plain with the feed's new products placed (remembered per model and feed version), or plain."""
        key = (plain.version, feed_version)
        if self._placed[0] != key:
            base = plain
            if feed is not None:
                before = len(feed["items"])
                base = new_items.placed(plain, feed["items"])
                dropped = before - len(feed["items"])
                if dropped:
                    log.info(
                        "feed version %s: %d item(s) unknown to model %s not kept (%d kept)",
                        feed_version,
                        dropped,
                        plain.version,
                        len(feed["items"]),
                    )
            self._placed = (key, base)
        return self._placed[1]

    def view(self, plain: Any, current: Any) -> Any:
        """The model to serve: current when nothing changed, else plain under the active feed and rules (built
        here, by whoever refreshes: the watcher thread of a long-running server, before it switches the model)."""
        feed_version, feed = self._follow(
            registry.FEED, self._load_feed(plain), again=self._feed_model not in (None, plain.version)
        )
        rules_version, rules = self._follow(registry.RULES, load_rules)
        # Rules with a start or end: only those in force now, looked at with every refresh (MODEL_POLL_SECONDS).
        in_force_now = in_force_key(rules, self.clock()) if rules else ()
        if in_force_now:  # some entries are timed
            rules = in_force(rules, self.clock())
        if (
            current is not None
            and current.version == plain.version
            and current.feed_version == feed_version
            and current.rules_version == rules_version
            and self._in_force == in_force_now
        ):
            return current
        self._in_force = in_force_now
        if feed is None and rules is None:
            return plain
        base = self._with_new_items(plain, feed_version, feed)
        return base.with_policy(
            Policy(base.items, base.item_price, feed, rules, feed_version, rules_version, self.currency, base.placement)
        )

    def draft(self, plain: Any, rules: dict | None, label: str) -> Any:
        """plain under the feed in force and the given rules (the console's preview: nothing is stored)."""
        feed_version, feed = self.loaded["feed"]
        base = self._with_new_items(plain, feed_version, feed)
        return base.with_policy(
            Policy(base.items, base.item_price, feed, rules, feed_version, label, self.currency, base.placement)
            if feed or rules
            else None
        )

    def rules_in_force(self) -> tuple[str | None, dict | None]:
        """The rules version loaded and its rules (every entry, whatever its window)."""
        return self.loaded["rules"]
