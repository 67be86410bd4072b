"""The product feed and the rules of one (model, feed, rules) combination compiled into arrays aligned with the
model's rows, once per version (and again when a timed rule's window opens or closes: merchandising.Merchandiser
builds a new policy then), and one request's eligibility read from them.

Everything an answer asks of the feed and the rules is an array lookup: eligibility (in stock, not blocked), the
request's category and price filters (one mask per distinct set of filters, remembered), the boosts (one factor
per row), the category path of each row (max_per_category), and what each basket row triggers (do_not_pair, pin).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recommender.core.feed_and_rules import (
    MAX_TOTAL_FACTOR,
    MIN_TOTAL_FACTOR,
    SELECTOR_KEYS,
    SHOWN,
    brand_key,
    category_key,
    category_keys,
)
from recommender.core.items import Items
from recommender.serving.merch_request import Options

MASKS = 128  # distinct request filter sets remembered per policy (a mask is one byte per item)


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
        # The popular picks' score is popularity relative to the best seller's.
        self.best_popularity = max(float(self.popularity[self.popular[0]]), 1.0) if n else 1.0
        self.feed_rows: dict[int, dict] = {}
        self._shown: dict[int, dict] = {}
        self._category_masks: dict[tuple[str, ...], np.ndarray] = {}
        self._request_masks: dict[tuple, np.ndarray] = {}
        self._exclude_rows: dict[tuple[str, ...], np.ndarray] = {}
        self._warnings: dict[tuple, tuple[str, ...]] = {}
        self.category_rows: dict[str, np.ndarray] = {}
        self.brand_rows: dict[str, np.ndarray] = {}
        self.leaf = np.full(n, -1, dtype=np.int64)  # the full category path's id, for max_per_category
        self.leaf_names: list[str] = []  # each id's category path, as the feed wrote it
        self.factor: np.ndarray | None = None
        self.boost_of: list[float | None] | None = None  # per row, the factor an answer shows (None for 1)
        self.pairs: dict[int, np.ndarray] = {}  # basket row -> rows it forbids (do_not_pair), ascending
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

    def exclude_rows(self, codes: tuple[str, ...]) -> np.ndarray:
        """The rows of the codes a request excludes (those the model knows); remembered for the last few hundred
        distinct lists (do not change the array)."""
        rows = self._exclude_rows.get(codes)
        if rows is None:
            index = self.items.index
            rows = np.asarray([index[c] for c in codes if c in index], dtype=np.int64)
            if len(self._exclude_rows) >= 256:
                self._exclude_rows.clear()
            self._exclude_rows[codes] = rows
        return rows

    def request_mask(self, options: Options) -> np.ndarray:
        """The items eligible under the feed, the rules and the request's category and price filters (whatever
        the basket); remembered per distinct set of filters (do not change the array)."""
        key = options.static_filters
        mask = self._request_masks.get(key)
        if mask is None:
            mask = self.eligible.copy()
            if options.categories:
                mask &= self.categories_mask(options.categories)
            if options.exclude_categories:
                mask &= ~self.categories_mask(options.exclude_categories)
            # Unknown prices fail every price filter: nothing is promised about them.
            if options.price_min is not None:
                mask &= self.price >= options.price_min
            if options.price_max is not None:
                mask &= self.price <= options.price_max
            if len(self._request_masks) >= MASKS:
                self._request_masks.clear()
            self._request_masks[key] = mask
        return mask

    def _compile_rules(self, rules: dict) -> None:
        block = rules["block"]
        for key, kind in (("codes", "code"), ("categories", "category"), ("brands", "brand")):
            if block.get(key):
                self.eligible[self.rows({kind: block[key]})] = False
        pairs: dict[int, list[np.ndarray]] = {}
        for rule in rules["do_not_pair"]:
            forbidden = self.rows(rule["item"])
            if len(forbidden):
                for b in self.rows(rule["basket"]).tolist():
                    pairs.setdefault(b, []).append(forbidden)
        # One array per basket row: a request reads it with one lookup, whatever the number of rules.
        self.pairs = {b: np.unique(np.concatenate(found)) for b, found in pairs.items()}
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
            self.boost_of = [None if f == 1 else f for f in self.factor.tolist()]

    def category_warnings(self, options: Options) -> list[str]:
        """What the answer says of categories the request names and no item of the feed is in."""
        key = (options.categories, options.exclude_categories)
        found = self._warnings.get(key)
        if found is None:
            out = []
            for name_of, effect in (
                ("categories", "no item can match it"),
                ("exclude_categories", "it excludes nothing"),
            ):
                for name in getattr(options, name_of):
                    if category_key(name) not in self.category_rows:
                        where = (
                            "in the product feed" if self.feed_version else "known: no product feed gives categories"
                        )
                        out.append(f"{name_of}: category {name!r} is not {where}; {effect}")
            if len(self._warnings) >= MASKS:
                self._warnings.clear()
            found = self._warnings[key] = tuple(out)
        return list(found)

    def eligibility(self, basket: np.ndarray, options: Options, dense: bool = True) -> Eligibility:
        """Which items may be recommended with this basket under these options (dense: one mask over every item,
        else asked of a few rows at a time)."""
        return Eligibility(self, basket, options, dense)

    def boosted(self, rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Scores after the rules' factors; a negative score is divided instead, so a boost always raises."""
        if self.factor is None:
            return scores
        f = self.factor[rows]
        out = scores * f
        down = scores < 0
        if down.any():
            out[down] = scores[down] / f[down]
        return out

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

    def shown_rows(self, rows: list[int]) -> list[dict]:
        """shown() of each of rows (one call for a whole answer)."""
        known = self._shown
        return [known[row] if row in known else self.shown(row) for row in rows]


def members(rows: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which of rows are in sorted_set (ascending), by binary search: no array the size of the model."""
    if not len(sorted_set):
        return np.zeros(len(rows), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, rows), len(sorted_set) - 1)
    return sorted_set[at] == rows


class Eligibility:
    """One request's eligibility (feed and rules, do_not_pair with the basket, the request's filters, not in the
    basket, not picked already). Dense (a model of up to merchandising.DENSE_ITEMS items): one mask over every item,
    a copy of the policy's remembered mask for the request's filters with the basket's own exclusions set; else
    checked on the few rows each step considers, so that its cost follows the answer, not the number of items."""

    def __init__(self, policy: Policy, basket: np.ndarray, options: Options, dense: bool = True) -> None:
        self.policy = policy
        self.options = options
        excluded = [basket]
        for b in basket.tolist() if policy.pairs else ():
            forbidden = policy.pairs.get(b)
            if forbidden is not None:
                excluded.append(forbidden)
        if options.exclude:
            excluded.append(policy.exclude_rows(tuple(options.exclude)))
        self.taken: list[np.ndarray] = []
        self.price_max = options.price_max
        bound = None
        if options.max_price_ratio is not None and len(basket):
            known = policy.price[basket]
            known = known[~np.isnan(known)]
            if len(known):  # a basket without a known price cannot bound anything
                bound = options.max_price_ratio * float(known.max())
                self.price_max = bound if self.price_max is None else min(bound, self.price_max)
        self.mask: np.ndarray | None = None
        if dense:
            self.mask = policy.request_mask(options).copy()
            for rows in excluded:
                self.mask[rows] = False
            if bound is not None:  # the request mask holds price_max already: price <= both is price <= the lower
                self.mask &= policy.price <= bound
            return
        self.within = policy.categories_mask(options.categories) if options.categories else None
        self.outside = policy.categories_mask(options.exclude_categories) if options.exclude_categories else None
        self.excluded = np.unique(np.concatenate(excluded)) if len(excluded) > 1 else basket

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """Which of rows may still be picked."""
        if self.mask is not None:
            return self.mask[rows]
        ok = self.policy.eligible[rows] & ~members(rows, self.excluded)
        for taken in self.taken:
            ok &= ~members(rows, taken)
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

    def allows(self, row: int) -> bool:
        """Whether one row may still be picked."""
        if self.mask is not None:
            return bool(self.mask[row])
        return bool(self(np.asarray([row], dtype=np.int64))[0])

    def take_rows(self, rows: list[int]) -> None:
        """A few rows (a list: the pins) now picked: not eligible again."""
        if self.mask is None:
            self.take(np.asarray(rows, dtype=np.int64))
            return
        mask = self.mask
        for row in rows:
            mask[row] = False

    def take(self, rows: np.ndarray) -> None:
        """Rows now picked: not eligible again."""
        if not len(rows):
            return
        if self.mask is not None:
            self.mask[rows] = False
        else:
            self.taken.append(np.sort(rows))
