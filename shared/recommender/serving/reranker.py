"""The learned re-ranker at answer time: features of a basket's best first-stage candidates, and the gradient-boosted
trees (trained at training time with LightGBM, exported to arrays) that order them, all candidates in one vectorised
numpy pass: no LightGBM, no pandas, no scipy.

Every feature's work is bounded by the basket: the tables it reads (per-item figures, posting lists of past invoices
and customers per item, description words) were computed at training time, capped per item. Training computes its
rows with this same code (`Reranker.features`), so what the trees learned from is what they see when serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recommender.serving import tree_eval
from recommender.serving.csr import ranges as _ranges
from recommender.serving.rerank_links import Incoming, link_features

RERANK_FILE = "rerank.npz"
FORMAT = 1
# The features, in the order of the trees' columns. Names are stable: the manifest and ranked_by use them.
FEATURES = (
    "score",  # the first stage's score: the sum of the item-item table's weights from the basket's items
    "rank",  # its rank among the candidates by that score (1 = best)
    "score_share",  # the score over the best candidate's
    "link_weight",  # the largest table weight from any one basket item
    "link_baskets",  # the most training baskets holding it with any one basket item
    "link_baskets_sum",  # baskets holding it with a basket item, summed over the basket
    "link_probability",  # the largest share of a basket item's baskets that also hold it
    "link_cosine",  # the largest co-purchase cosine with a basket item
    "links",  # basket items with a table weight for it
    "popularity",  # log(1 + training baskets holding it)
    "recent_sales",  # log(1 + baskets holding it in the last 30 days of the training data)
    "trend",  # its sales rate in the last 30 days over its rate in the whole period
    "days_since_sold",  # days from its last sale to the end of the training data
    "age_days",  # days from its first sale to the end of the training data
    "price_ratio",  # log of its price over the basket's median price (0 when either is unknown)
    "text_similarity",  # TF-IDF cosine of its description with the basket's
    "session_knn",  # share of the past invoices most like the basket that hold it
    "customer_knn",  # share of the returning customers whose history is most like the basket who bought it
    "customer_top",  # whether the returning customer whose history holds most of the basket bought it
    "basket_size",  # items of the basket the model knows
    "customer_match",  # the share of the basket's items in that customer's history
    "customer_top_baskets",  # log(1 + baskets in which that customer bought it)
    "customer_top_days",  # days from that customer's last purchase of it to the end of the training data
)
NEVER = 1000.0  # customer_top_days of an item the customer never bought
COUNTED = ("popularity", "recent_sales", "customer_top_baskets")  # log(1 + count) features, shown as counts
ITEM_COLUMNS = ("popularity", "recent_sales", "trend", "days_since_sold", "age_days")
SESSION_NEIGHBOURS = 100
CUSTOMER_NEIGHBOURS = 20


def squash(first: np.ndarray) -> np.ndarray:
    """The final score of an item the trees did not re-rank: its first-stage score mapped into (0, 0.5) when
    positive (below every re-ranked item), unchanged when not (so 'nothing learned' still reads as <= 0)."""
    first = np.asarray(first, dtype=np.float64)
    return np.where(first > 0, 0.5 * first / (1.0 + np.abs(first)), first)


def final_of(raw: np.ndarray) -> np.ndarray:
    """The final score of re-ranked items from the trees' raw output: in (0.5, 1), in the trees' order."""
    return 0.5 + 0.5 / (1.0 + np.exp(-np.clip(raw, -30.0, 30.0)))


@dataclass
class Trees:
    """Boosted trees as flat arrays: node n splits on feature[n] (go right when x > threshold[n]) to child[2n] or
    child[2n + 1]; a leaf is its own two children (threshold +inf), so depth steps reach every tree's leaf. value[n]
    is the node's output (a leaf's value; an inner node's mean, for path contributions)."""

    feature: np.ndarray  # intp per node
    threshold: np.ndarray  # float64 per node
    child: np.ndarray  # intp, 2 per node
    value: np.ndarray  # float64 per node
    roots: np.ndarray  # intp per tree
    depth: int
    # The same trees as leaf bitmasks (serving/tree_eval.py), built here: scoring them needs no walk.
    fast: tree_eval.Bitvectors | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.fast = tree_eval.build(self.feature, self.threshold, self.child, self.value, self.roots)

    def _walk(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # LightGBM reads a missing value as 0 in a model trained without any (every feature here is finite).
        x = np.nan_to_num(np.ascontiguousarray(x, dtype=np.float64), nan=0.0)
        flat = x.ravel()
        base = (np.arange(len(x), dtype=np.intp) * x.shape[1])[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots)))
        return flat, base, node

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The leaf each row of x (rows x features) reaches in each tree: every tree at once, one level a step."""
        flat, base, node = self._walk(x)
        feature, threshold, child = self.feature, self.threshold, self.child
        for _ in range(self.depth):
            right = flat.take(base + feature.take(node)) > threshold.take(node)
            node = child.take(2 * node + right)
        return node

    def score(self, x: np.ndarray) -> np.ndarray:
        """The raw score of each row of x (rows x features)."""
        if not len(x) or not len(self.roots):
            return np.zeros(len(x))
        if self.fast is not None:
            return self.fast.score(x)
        return self.value.take(self.leaves(x)).sum(axis=1)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Each feature's share of each row's raw score, from the trees' paths (the change of the node output at
        every split on it, Saabas); columns: the features, then the trees' common bias. Rows sum to score(x)."""
        n_features = x.shape[1]
        out = np.zeros((len(x), n_features + 1))
        if not len(x) or not len(self.roots):
            return out
        flat, base, node = self._walk(x)
        out[:, -1] = self.value[self.roots].sum()
        rows = np.broadcast_to(np.arange(len(x))[:, None], node.shape)
        for _ in range(self.depth):
            f = self.feature[node]
            right = flat[base + f] > self.threshold[node]
            nxt = self.child[2 * node + right]
            np.add.at(out, (rows, f), self.value[nxt] - self.value[node])
            node = nxt
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store (tree_ prefixed)."""
        return {
            "tree_feature": self.feature.astype(np.int32),
            "tree_threshold": self.threshold,
            "tree_child": self.child.astype(np.int32),
            "tree_value": self.value,
            "tree_roots": self.roots.astype(np.int32),
            "tree_depth": np.asarray(self.depth),
        }

    @classmethod
    def from_arrays(cls, arrays: dict) -> Trees:
        """The trees from stored arrays."""
        return cls(
            arrays["tree_feature"].astype(np.intp),
            arrays["tree_threshold"].astype(np.float64),
            arrays["tree_child"].astype(np.intp),
            arrays["tree_value"].astype(np.float64),
            arrays["tree_roots"].astype(np.intp),
            int(arrays["tree_depth"]),
        )


DENSE_ITEMS = 65536  # up to this many items, a candidate's slot is found through an array over every item


class Slots:
    """Where rows sit among a basket's candidates (ascending): through one small array over every item in a model
    with few, by binary search in one with many (no array the size of the model per request)."""

    def __init__(self, candidates: np.ndarray, n_items: int) -> None:
        self.candidates = candidates
        self.n_items = n_items
        self.dense = None
        if n_items <= DENSE_ITEMS:
            self.dense = np.full(n_items, -1, dtype=np.intp)
            self.dense[candidates] = np.arange(len(candidates))

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The positions of rows among the candidates, and which rows are candidates (positions of others: junk)."""
        if self.dense is not None:
            at = self.dense.take(rows)
            return at, at >= 0
        return _slots(self.candidates, rows)

    def sums(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Per candidate, the sum of the weights of its entries in rows (other rows ignored)."""
        if self.dense is not None:  # one count over every item beats finding each entry's slot
            return np.bincount(rows, weights=weights, minlength=self.n_items).take(self.candidates)
        at, hit = self(rows)
        return np.bincount(at[hit], weights=weights[hit], minlength=len(self.candidates))


def _slots(candidates: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows, their positions in candidates (ascending) and which of them are candidates."""
    at = np.minimum(np.searchsorted(candidates, rows), len(candidates) - 1)
    return at, candidates[at] == rows


# Each kNN feature reads at most this many posted past rows for a basket (each item's most recent first, the same
# number per item): a basket of hundreds of items costs what one of a few dozen does. 20 items' full lists.
SESSION_READ = 2000
CUSTOMER_READ = 4000


@dataclass
class Postings:
    """Past rows (invoices or customers' histories) per item, capped per item, and the items of each row."""

    item_ptr: np.ndarray
    item_rows: np.ndarray
    row_ptr: np.ndarray
    row_items: np.ndarray
    row_counts: np.ndarray | None = None  # per entry of row_items: baskets of that row holding the item
    row_days: np.ndarray | None = None  # per entry: days from the row's last purchase of it to the end
    alpha: float = 0.5  # likeness = overlap / row size ^ alpha
    budget: int = SESSION_READ  # postings read per basket at most

    def __post_init__(self) -> None:
        sizes = np.diff(self.row_ptr)
        self.row_sizes = sizes
        self.row_norm = np.maximum(sizes, 1).astype(np.float64) ** self.alpha

    def nearest(self, basket: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The k rows most like the basket (overlap / row size ^ alpha; fewer when fewer share an item), their
        likeness and overlap; each basket item's postings read up to an equal share of the budget."""
        cap = max(1, self.budget // max(len(basket), 1))
        positions = _ranges(self.item_ptr, basket, cap)
        empty = np.empty(0, dtype=np.intp)
        if not len(positions):
            return empty, np.empty(0), empty
        posted = self.item_rows.take(positions)
        n_rows = len(self.row_ptr) - 1
        if n_rows <= 4 * len(posted):  # a count per past row beats sorting the postings (both: rows ascending)
            per_row = np.bincount(posted, minlength=n_rows)
            rows = np.flatnonzero(per_row)
            overlap = per_row.take(rows)
        else:
            rows, overlap = np.unique(posted, return_counts=True)
        sim = overlap / self.row_norm.take(rows)
        if len(rows) > k:
            keep = np.argpartition(-sim, k - 1)[:k]
            rows, sim, overlap = rows[keep], sim[keep], overlap[keep]
        return rows, sim, overlap

    def share(self, basket: np.ndarray, slots: Slots, k: int) -> np.ndarray:
        """Share of the k rows most like the basket holding each candidate, weighted by likeness."""
        rows, sim, _overlap = self.nearest(basket, k)
        if not len(rows):
            return np.zeros(len(slots.candidates))
        items = self.row_items.take(_ranges(self.row_ptr, rows))
        return slots.sums(items, np.repeat(sim, self.row_sizes.take(rows))) / sim.sum()

    def neighbours(
        self, basket: np.ndarray, slots: Slots, k: int
    ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
        """share(); whether the single most alike row holds each candidate; the share of the basket in that row;
        and, from that row, log(1 + baskets) and the days since its last purchase of each candidate."""
        m = len(slots.candidates)
        top, counts, days = np.zeros(m), np.zeros(m), np.full(m, NEVER)
        rows, sim, overlap = self.nearest(basket, k)
        if not len(rows) or not m:
            return np.zeros(m), top, 0.0, counts, days
        first = np.lexsort((rows, -sim))[0]
        best, match = rows[first], overlap[first] / len(basket)
        items = self.row_items.take(_ranges(self.row_ptr, rows))
        share = slots.sums(items, np.repeat(sim, self.row_sizes.take(rows))) / sim.sum()
        lo, hi = self.row_ptr[best], self.row_ptr[best + 1]
        at, hit = slots(self.row_items[lo:hi])
        top[at[hit]] = 1.0
        if self.row_counts is not None:
            counts[at[hit]] = np.log1p(self.row_counts[lo:hi][hit])
            days[at[hit]] = self.row_days[lo:hi][hit]
        return share, top, float(match), counts, days


@dataclass
class Reranked:
    """A basket's re-ranked candidates: positions in its candidate array, their final scores, and feature rows."""

    at: np.ndarray
    scores: np.ndarray
    features: np.ndarray
    rows: np.ndarray  # the items (model rows), ascending


class Reranker:
    """The re-ranker of one model version: its tables and, once trained, its trees."""

    def __init__(
        self, arrays: dict, popularity: Sequence[int], spec: dict | None = None, table: tuple | None = None
    ) -> None:
        self.spec = spec or {}
        # The model's item-item table (indptr, target) read backwards: the link features of a big basket read the
        # entries into its candidates rather than every entry of its items (serving/rerank_links.py).
        self.incoming = Incoming.of(*table) if table is not None else None
        # The candidates re-ranked: the best `served` of the `candidates` the trees learned from (models trained
        # before the two differed re-rank all of them).
        self.depth = int(arrays.get("served", arrays.get("candidates", 100)))
        # Bigger baskets keep their first stage's order (models trained before the bound re-rank every basket).
        self.max_basket = int(arrays.get("max_basket", 2**62))
        self.item = arrays["item_features"].astype(np.float64)
        self.price = arrays["item_price"].astype(np.float64)
        self.popularity = np.asarray(popularity, dtype=np.float64)
        self.pop1 = np.maximum(self.popularity, 1.0)
        self.sessions = Postings(
            *(arrays[f"session_{p}"] for p in ("item_ptr", "item_rows", "row_ptr", "row_items")), alpha=0.5
        )
        self.customers = Postings(
            *(
                arrays.get(f"customer_{p}")
                for p in ("item_ptr", "item_rows", "row_ptr", "row_items", "row_counts", "row_days")
            ),
            alpha=0.1,
            budget=CUSTOMER_READ,
        )
        self.word_ptr, self.word_idx, self.word_val = arrays["word_ptr"], arrays["word_idx"], arrays["word_val"]
        self.words = int(self.word_idx.max(initial=-1)) + 1
        self.trees = Trees.from_arrays(arrays) if "tree_roots" in arrays else None

    def leaves_order(self, known: int) -> bool:
        """Whether a basket of this many known items keeps the first stage's order (more than max_basket)."""
        return known > self.max_basket

    def choose(self, candidates: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Positions (in candidates, ascending) of the ones the trees re-rank: the best `depth` by first-stage score
        among those scoring above 0 (of equal scores at the cut, the lower positions: the lower rows)."""
        positive = np.flatnonzero(first > 0)
        if len(positive) <= self.depth:
            return positive
        values = first.take(positive)
        kth = -np.partition(-values, self.depth - 1)[self.depth - 1]
        keep = values > kth
        # The set a stable sort by score would cut: every score above the cut's, then the first of those equal to it.
        keep[np.flatnonzero(values == kth)[: self.depth - int(np.count_nonzero(keep))]] = True
        return positive[keep]

    def features(
        self, model: object, basket: np.ndarray, candidates: np.ndarray, first: np.ndarray, positions: np.ndarray
    ) -> np.ndarray:
        """Feature rows (len(candidates) x FEATURES) of candidates (ascending rows; first their first-stage scores,
        in rank order not required) for a basket of known rows; positions: the table entries the basket read."""
        m = len(candidates)
        x = np.zeros((m, len(FEATURES)))
        if not m:
            return x
        x[:, 0] = first
        # by score, ties by row: candidates are ascending, so a stable sort on the score alone
        x[np.argsort(-first, kind="stable"), 1] = np.arange(1, m + 1)
        x[:, 2] = first / max(float(first.max()), 1e-12)
        slots = Slots(candidates, len(self.item))
        self.links(model, basket, positions, slots, x)
        x[:, 9:14] = self.item.take(candidates, axis=0)
        x[:, 14] = self.price_ratio(basket, candidates)
        x[:, 15] = self.text(basket, candidates)
        x[:, 16] = self.sessions.share(basket, slots, SESSION_NEIGHBOURS)
        x[:, 17], x[:, 18], x[:, 20], x[:, 21], x[:, 22] = self.customers.neighbours(basket, slots, CUSTOMER_NEIGHBOURS)
        x[:, 19] = len(basket)
        return x

    def links(self, model: object, basket: np.ndarray, positions: np.ndarray, slots: Slots, x: np.ndarray) -> None:
        """The link features (columns 3-8) from the table entries of the basket's items to the candidates."""
        link_features(model, basket, positions, slots, self.incoming, self.pop1, x)

    def price_ratio(self, basket: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """log of each candidate's price over the basket's median price (0 when either is unknown)."""
        out = np.zeros(len(candidates))
        known = self.price.take(basket)
        known = known[np.isfinite(known) & (known > 0)]
        if len(known):
            price = self.price.take(candidates)
            ok = np.isfinite(price) & (price > 0)
            known.sort()  # the median, without np.median's overhead (the same value)
            median = (known[(len(known) - 1) // 2] + known[len(known) // 2]) / 2.0
            out[ok] = np.log(price[ok] / median)
        return out

    def text(self, basket: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """TF-IDF cosine of each candidate's description with the basket's mean description vector."""
        positions = _ranges(self.word_ptr, basket)
        if not len(positions):
            return np.zeros(len(candidates))
        basket_vec = np.bincount(
            self.word_idx.take(positions), weights=self.word_val.take(positions), minlength=self.words
        ) / len(basket)
        entries = _ranges(self.word_ptr, candidates)
        if not len(entries):
            return np.zeros(len(candidates))
        lengths = self.word_ptr[candidates + 1] - self.word_ptr[candidates]
        owner = np.repeat(np.arange(len(candidates)), lengths)
        weights = self.word_val.take(entries) * basket_vec.take(self.word_idx.take(entries))
        return np.bincount(owner, weights=weights, minlength=len(candidates))

    def rerank(
        self, model: object, basket: np.ndarray, candidates: np.ndarray, first: np.ndarray, positions: np.ndarray
    ) -> Reranked:
        """The trees' final scores for the basket's best candidates (candidates ascending, first aligned); none for a
        basket it leaves in the first stage's order."""
        at = np.empty(0, dtype=np.intp) if self.leaves_order(len(basket)) else self.choose(candidates, first)
        x = self.features(model, basket, candidates[at], first[at], positions)
        raw = self.trees.score(x) if self.trees is not None else -x[:, 1]
        return Reranked(at, final_of(raw), x, candidates[at])

    def explain(self, model: object, basket: np.ndarray, x: np.ndarray, rows: np.ndarray, top: int = 3) -> list[list]:
        """For each re-ranked row (x its feature rows): up to `top` features that moved it up most (positive path
        contributions), each {"feature", "contribution", "text"}."""
        if self.trees is None or not len(rows):
            return [[] for _ in rows]
        contrib = self.trees.contributions(x)[:, : len(FEATURES)]
        out = []
        for row, values, c in zip(rows.tolist(), x, contrib):
            chosen = [f for f in np.argsort(-c, kind="stable")[:top].tolist() if c[f] > 0]
            out.append(
                [
                    {
                        "feature": FEATURES[f],
                        "contribution": round(float(c[f]), 4),
                        "text": self._words(model, basket, row, FEATURES[f], values),
                    }
                    for f in chosen
                ]
            )
        return out

    def _words(self, model: object, basket: np.ndarray, row: int, name: str, values: np.ndarray) -> str:
        """A feature's effect on an item, in words."""
        value = float(values[FEATURES.index(name)])
        if name in ("link_baskets", "link_probability", "link_cosine", "link_weight", "links", "link_baskets_sum"):
            partner, together = _strongest_partner(model, basket, row)
            if partner is not None:
                desc = model.items[partner].description or model.items[partner].stock_code
                if name == "link_probability":
                    share = together / max(self.popularity[partner], 1.0)
                    return f"bought by {share:.0%} of the shoppers who bought {desc}"
                if name == "links" and value > 1:
                    return f"goes with {int(value)} items of the basket"
                return f"bought with {desc} in {together:,} baskets"
            return "goes with the basket's items"
        count = int(round(float(np.expm1(min(value, 30.0))))) if name in COUNTED else 0
        words = {
            "score": lambda: "goes with the basket's items as a whole",
            "rank": lambda: "among the basket's strongest matches",
            "score_share": lambda: "close to the basket's strongest match",
            "popularity": lambda: f"a steady seller ({count:,} baskets)",
            "recent_sales": lambda: f"sold often in the last 30 days ({count:,} baskets)",
            "trend": lambda: "selling more lately than before" if value > 1 else "selling steadily",
            "days_since_sold": lambda: (
                f"sold {int(value)} days before the model's last purchase"
                if value >= 1
                else "sold on the model's last day"
            ),
            "age_days": lambda: f"on sale for {int(value)} days",
            "price_ratio": lambda: (
                "priced like the basket's items" if abs(value) < 0.7 else "a different price from the basket's items"
            ),
            "text_similarity": lambda: "described like the basket's items",
            "session_knn": lambda: "in past baskets like this one",
            "customer_knn": lambda: "bought by customers whose history is like this basket",
            "customer_top": lambda: "bought before by the customer this basket looks most like",
            "basket_size": lambda: f"suits a basket of {int(value)} items",
            "customer_match": lambda: "bought before by the customer this basket looks most like",
            "customer_top_baskets": lambda: f"bought {count} times before by the customer this basket looks most like",
            "customer_top_days": lambda: "bought lately by the customer this basket looks most like",
        }
        return words[name]() if name in words else name


def _strongest_partner(model: object, basket: np.ndarray, row: int) -> tuple[int | None, int]:
    """The basket item bought with row in the most training baskets (by the table's counts), and how many."""
    if model.table_count is None:
        return None, 0
    positions = _ranges(model.table_indptr, basket)
    hit = np.flatnonzero(model.table_target[positions] == row)
    if not len(hit):
        return None, 0
    sources = np.repeat(basket, model.table_indptr[basket + 1] - model.table_indptr[basket])[hit]
    counts = model.table_count[positions[hit]]
    best = int(np.argmax(counts))  # the first of the largest: the lowest row among ties (basket is ascending)
    return int(sources[best]), int(counts[best])


def load(data: dict, popularity: Sequence[int], spec: dict | None, table: tuple | None = None) -> Reranker:
    """A Reranker from the arrays of a model's rerank.npz (and its model's table: indptr, target)."""
    return Reranker(data, popularity, spec, table)
