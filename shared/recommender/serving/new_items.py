"""Products the model never saw, placed from the product feed (numpy only): each new code with a title or a
description is matched to the known items it resembles most (text, category, brand, price), its twins, and added
to a view of the model as rows of its own, with item-item table entries derived from its twins':

- as a basket item, its complements are its twins' complements, weighted by resemblance;
- as a candidate, it scores where its twins would, times DISCOUNT and its resemblance.

Known items' entries are left as they are, so a basket that reaches no new product is scored exactly as before.
Built when the feed or the model changes, by whoever refreshes the model (the watcher thread of a long-running
server), never on a request.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from recommender.core.feed_and_rules import brand_key, category_key
from recommender.core.items import Items
from recommender.core.resemblance import TextIndex
from recommender.serving.csr import spans

log = logging.getLogger("recommender")

# Known items a new product's complements are borrowed from (the most resembling, down to MIN_RESEMBLANCE).
TWINS = 3
MIN_RESEMBLANCE = 0.2
# A new product as a candidate scores its twins' scores (shared by resemblance) times this and its resemblance
# (below 1): under a known item with the same evidence, since its evidence is borrowed. Chosen on validation
# (bench/results/quality.md), as are the weights below.
DISCOUNT = 1.0
# A basket holding a twin: the new product (a new colour of the same holder, say) scores SELF_WEIGHT times the
# twin's strongest table weight (times DISCOUNT and resemblance). Items resembling each other sell together.
SELF_WEIGHT = 1.0
# How resemblance is made: text (TF-IDF cosine of title and description), then what the feed says of both.
WEIGHTS = {"text": 0.7, "category": 0.2, "brand": 0.05, "price": 0.05}
# At most this many new products in one answer (the best scored): borrowed evidence is weaker than the model's
# own, and a range of new products should not push out every known item a shopper came for.
NEW_PER_ANSWER = 1
# ... and this many when the basket holds a new product itself: products launched together sell together.
NEW_PER_ANSWER_NEW_BASKET = 3
# A new product in the basket brings the new products resembling its twins' partners this much more than a known
# item would (a range launched together sells together).
TOGETHER = 8.0
# With the learned re-ranker, a new product takes the place its first-stage score gives it among the known
# candidates, this many places lower (the re-ranked order is surer of its top than the first stage was).
RERANKED_LOWER = 0
MAX_NEW_ITEMS = 50_000  # a feed listing more unknown codes considers the first ones (in the feed's order) only


@dataclass(frozen=True)
class Placement:
    """The new products placed: codes, descriptions (the feed's title, else description), each one's twins (known
    rows, -1 pads), their shares (summing to 1) and the resemblance of the nearest one (0..1)."""

    codes: list[str]
    descriptions: list[str]
    twins: np.ndarray  # int64 new x TWINS
    shares: np.ndarray  # float64 new x TWINS
    resemblance: np.ndarray  # float64 per new product
    prices: np.ndarray  # float64 per new product (NaN: unknown)

    def __len__(self) -> int:
        return len(self.codes)


def text_of(attributes: dict) -> str:
    """What a feed row says a product is: its title and description."""
    return " ".join(str(attributes.get(k) or "") for k in ("title", "description")).strip()


def _price(attributes: dict) -> float:
    price = attributes.get("price")
    return float(price) if isinstance(price, (int, float)) and 0 < price < float("inf") else math.nan


def _keys(n: int, rows: dict[int, dict], key: str, norm: Callable[[str], str]) -> tuple[np.ndarray, dict[str, int]]:
    """Per known row, an id of its feed attribute (-1 unknown), and the ids by value."""
    ids: dict[str, int] = {}
    out = np.full(n, -1, dtype=np.int64)
    for i, attributes in rows.items():
        value = attributes.get(key)
        if value:
            out[i] = ids.setdefault(norm(str(value)), len(ids))
    return out, ids


def _top_level(name: str) -> str:
    return category_key(name).split(">")[0]


def place(
    items: Items, prices: np.ndarray | None, text: TextIndex, known: dict[int, dict], new: dict[str, dict]
) -> Placement:
    """Place the new products of a feed (new: code -> attributes) among the known items (known: row -> the feed's
    attributes of known items; prices: the training file's). Products without text, category or brand to go by,
    or resembling nothing enough, are left out."""
    n = len(items)
    leaf, leaves = _keys(n, known, "category", category_key)
    top, tops = _keys(n, known, "category", _top_level)
    brand, brands = _keys(n, known, "brand", brand_key)
    price = np.full(n, np.nan) if prices is None else np.asarray(prices, dtype=np.float64).copy()
    for i, attributes in known.items():
        p = _price(attributes)
        if p == p:
            price[i] = p
    log_price = np.log(np.where(price > 0, price, np.nan))
    codes, descriptions, twins, shares, strength, new_prices = [], [], [], [], [], []
    # In the feed's order (stored by code), never sorted here: one sort of a million codes would hold the
    # interpreter lock, and every request of the process, for a second.
    for code, attributes in islice(new.items(), MAX_NEW_ITEMS):
        words = text_of(attributes)
        similar = text.similarity(words, n) if words else None
        if similar is None and not (attributes.get("category") or attributes.get("brand")):
            continue  # nothing known is worded like it, and nothing else to go by
        score = np.zeros(n)
        total = 0.0
        if words:
            if similar is not None:
                score += WEIGHTS["text"] * similar
            total += WEIGHTS["text"]
        if attributes.get("category"):
            same_leaf = leaf == leaves.get(category_key(attributes["category"]), -2)
            same_top = top == tops.get(_top_level(attributes["category"]), -2)
            score += WEIGHTS["category"] * np.where(same_leaf, 1.0, np.where(same_top, 0.5, 0.0))
            total += WEIGHTS["category"]
        if attributes.get("brand"):
            score += WEIGHTS["brand"] * (brand == brands.get(brand_key(attributes["brand"]), -2))
            total += WEIGHTS["brand"]
        if not total:
            continue
        p = _price(attributes)
        if p == p:
            # exp(-|log ratio|): 1 at the same price, 0.5 at twice or half of it; unknown prices add nothing.
            near = np.exp(-np.abs(np.nan_to_num(log_price - math.log(p), nan=np.inf)))
            score += WEIGHTS["price"] * near
            total += WEIGHTS["price"]
        score /= total
        best = np.argpartition(-score, TWINS - 1)[:TWINS] if n > TWINS else np.arange(n)
        best = best[np.lexsort((best, -score[best]))]  # most resembling first, ties by row (popular first)
        best = best[score[best] >= MIN_RESEMBLANCE]
        if not len(best):
            continue
        codes.append(code)
        descriptions.append(str(attributes.get("title") or attributes.get("description")))
        row = np.full(TWINS, -1, dtype=np.int64)
        row[: len(best)] = best
        share = np.zeros(TWINS)
        share[: len(best)] = score[best] / score[best].sum()
        twins.append(row)
        shares.append(share)
        strength.append(min(1.0, float(score[best[0]])))
        new_prices.append(p)
    return Placement(
        codes,
        descriptions,
        np.asarray(twins, dtype=np.int64).reshape(-1, TWINS),
        np.asarray(shares, dtype=np.float64).reshape(-1, TWINS),
        np.asarray(strength, dtype=np.float64),
        np.asarray(new_prices, dtype=np.float64),
    )


def per_answer(basket: np.ndarray, first_new: int) -> int:
    """How many new products an answer for this basket (ascending rows) may hold."""
    return NEW_PER_ANSWER_NEW_BASKET if len(basket) and basket[-1] >= first_new else NEW_PER_ANSWER


def capped(
    candidates: np.ndarray,
    scored: Callable[[np.ndarray], np.ndarray],
    ok: Callable[[np.ndarray], np.ndarray],
    first_new: int,
    most: int,
) -> np.ndarray:
    """The candidates (ascending) without the new products beyond the `most` best scored eligible ones (scored and
    ok give the scores and the eligibility of rows); free when there are no more than that."""
    start = int(np.searchsorted(candidates, first_new))  # new products are numbered last
    if len(candidates) - start <= most:
        return candidates
    new = candidates[start:]
    scores = scored(new)
    scores[~ok(new)] = -np.inf
    best = np.sort(np.argsort(-scores, kind="stable")[:most])  # ties: the first row
    return np.concatenate([candidates[:start], new[best]])


def _strongest(group: np.ndarray, weight: np.ndarray, k: int) -> np.ndarray:
    """Which entries are among the k largest weights of their group (by group, then weight, then position)."""
    order = np.lexsort((np.arange(len(group)), -weight, group))
    first = np.searchsorted(group[order], group[order])
    keep = np.zeros(len(group), dtype=bool)
    keep[order[np.arange(len(group)) - first < k]] = True
    return keep


def _merge(source: np.ndarray, target: np.ndarray, weight: np.ndarray, count: np.ndarray, width: int) -> tuple:
    """Entries with the same (source, target) made one: weights summed, counts the largest."""
    if not len(source):
        return source, target, weight, count
    key = source * width + target
    unique, inverse = np.unique(key, return_inverse=True)
    summed = np.bincount(inverse, weights=weight, minlength=len(unique))
    most = np.zeros(len(unique), dtype=np.int64)
    np.maximum.at(most, inverse, count)
    return unique // width, unique % width, summed, most


def extend(model: Any, placement: Placement, discount: float | None = None, self_weight: float | None = None) -> Any:
    """A view of model with the placed products as rows len(model.items) onwards: items, prices, nearest items
    (their first twin's) and the item-item table. The known items' table entries keep their order, so their
    scores are the same to the last bit."""
    discount = DISCOUNT if discount is None else discount
    self_weight = SELF_WEIGHT if self_weight is None else self_weight
    n, m = len(model.items), len(placement)
    width = n + m
    per_item = int(model.manifest.get("model", {}).get("neighbors") or 100)  # the table's neighbours per item
    indptr, target, weight = model.table_indptr, model.table_target, model.table_weight.astype(np.float64)
    count = model.table_count if model.table_count is not None else np.full(len(target), -1, dtype=np.int64)
    valid = placement.twins >= 0
    new_of = np.repeat(np.arange(m), valid.sum(axis=1))  # one per (new product, twin)
    twin = placement.twins[valid]
    share = (placement.shares * placement.resemblance[:, None])[valid]
    # The strongest table weight of each item: what goes with a twin's own near-copy (SELF_WEIGHT).
    strongest = np.zeros(n)
    nonempty = np.diff(indptr) > 0
    if len(weight):
        strongest[nonempty] = np.maximum.reduceat(weight, indptr[:-1][nonempty])
    # As a basket item: its twins' rows, weighted by share x resemblance, and the twins themselves (counts 0: no
    # basket ever held it).
    lengths = indptr[twin + 1] - indptr[twin]
    at = spans(indptr[twin], lengths)
    fwd = _merge(
        np.concatenate([np.repeat(n + new_of, lengths), n + new_of]),
        np.concatenate([target[at].astype(np.int64), twin]),
        np.concatenate([weight[at] * np.repeat(share, lengths), self_weight * strongest[twin] * share]),
        np.zeros(len(at) + len(twin), dtype=np.int64),
        width,
    )
    # As a candidate: every entry s -> twin gives s -> new product, discounted (counts: the twin's, for reasons).
    # The new products' own entries count as sources too: a new product in the basket brings the new products
    # resembling its twins (a range launched together sells together).
    old_source = np.repeat(np.arange(n), np.diff(indptr))
    all_source = np.concatenate([old_source, fwd[0]])
    all_target = np.concatenate([target.astype(np.int64), fwd[1]])
    all_weight = np.concatenate([weight, fwd[2]])
    all_count = np.concatenate([count.astype(np.int64), fwd[3]])
    by_target = np.argsort(all_target, kind="stable")
    target_ptr = np.searchsorted(all_target[by_target], np.arange(n + 1))
    lengths_t = target_ptr[twin + 1] - target_ptr[twin]
    at_t = spans(target_ptr[twin], lengths_t)
    entries = by_target[at_t]
    rev_source = [all_source[entries]]
    rev_target = [np.repeat(n + new_of, lengths_t)]
    rev_weight = [discount * all_weight[entries] * np.repeat(share, lengths_t)]
    rev_count = [all_count[entries]]
    if self_weight:  # a basket holding the twin itself
        rev_source.append(twin)
        rev_target.append(n + new_of)
        rev_weight.append(discount * self_weight * strongest[twin] * share)
        rev_count.append(np.zeros(len(twin), dtype=np.int64))
    rev = _merge(*(np.concatenate(parts) for parts in (rev_source, rev_target, rev_weight, rev_count)), width)
    rev[2][rev[0] >= n] *= TOGETHER
    # A pairing the regression weighs down is not carried over to a product never sold; nor is one with itself.
    # Each new product keeps as many entries each way as a known item has (the strongest): a feed of many new
    # products grows the table, and what a basket reads, no more than as many known items would.
    keep = (rev[2] > 0) & (rev[0] != rev[1])
    keep &= _strongest(np.where(keep, rev[1], -1), np.where(keep, rev[2], -np.inf), per_item)
    fwd = tuple(part[_strongest(fwd[0], np.abs(fwd[2]), per_item)] for part in fwd)
    source = np.concatenate([old_source, rev[0][keep], fwd[0]])
    order = np.argsort(source, kind="stable")  # known entries first within each row: their sums keep their order
    view = copy.copy(model)
    view.items = Items(
        model.items.codes + placement.codes,
        model.items.descriptions + placement.descriptions,
        model.items.popularity + [0] * m,
    )
    view.table_indptr = np.searchsorted(source[order], np.arange(width + 1)).astype(indptr.dtype)
    view.table_target = np.concatenate([target, rev[1][keep], fwd[1]])[order].astype(target.dtype)
    view.table_weight = np.concatenate([weight, rev[2][keep], fwd[2]])[order].astype(model.table_weight.dtype)
    view.table_count = np.concatenate([count, rev[3][keep], fwd[3]])[order]
    prices = model.item_price if model.item_price is not None else np.full(n, np.nan)
    view.item_price = np.concatenate([prices, placement.prices])
    first = placement.twins[:, 0]
    view._near = np.concatenate([model._near, model.near(first)])
    view._asked = np.concatenate([model._asked, np.ones(m, dtype=bool)])
    view.first_new = n
    view.placement = placement
    view.known_model = model  # the model as trained: what the re-ranker computes its features on
    return view


def placed(model: Any, feed_items: dict[str, dict]) -> Any:
    """model with the feed's new products placed (model itself when the feed lists none it can place); the codes
    unknown to the model that could not be placed are removed from feed_items (nothing is kept of them)."""
    index = model.items.index
    new = {code: a for code, a in feed_items.items() if code not in index}
    if not new:
        return model
    known = {index[code]: a for code, a in feed_items.items() if code in index}
    text = model.resemblance() if model.resemblance is not None else TextIndex.build(model.items.descriptions)
    placement = place(model.items, model.item_price, text, known, new)
    kept = set(placement.codes)
    for code in new:
        if code not in kept:
            del feed_items[code]
    if len(placement):
        log.info(
            "%d product(s) unknown to model %s placed as new products by their twins", len(placement), model.version
        )
    return extend(model, placement) if len(placement) else model


def final_scores(
    model: Any, basket: np.ndarray, candidates: np.ndarray, first: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, Any]:
    """Model.final_scores with new products (numbered last, in the basket and among the candidates): the trees
    re-rank the known candidates from the basket's known items; each new candidate takes the place in their final
    order that its first-stage score gives it among them (where its twins' evidence puts it)."""
    from recommender.serving.reranker import Reranked, squash

    n = model.first_new
    known = basket[: int(np.searchsorted(basket, n))]
    if not len(known):  # only new products in the basket: their borrowed scores rank the answer
        return first, None
    # The trees' features come from the model as trained: its own table entries from the basket's known items
    # (the known candidates' first-stage scores are the same in both, bit for bit).
    plain = model.known_model
    read = plain.entries(known)  # a big basket's strongest entries, as the plain model's answer reads them
    kc = int(np.searchsorted(candidates, n))
    done = plain.reranker.rerank(plain, known, candidates[:kc], first[:kc], read)
    final = squash(first)
    final[done.at] = done.scores
    new_at = kc + np.flatnonzero(first[kc:] > 0)
    if len(done.at) and len(new_at):
        above = np.sort(-first[done.at])  # the re-ranked candidates' first-stage scores, best first (negated)
        place = np.searchsorted(above, -first[new_at], side="left")  # how many score above each new one
        ranked = np.sort(done.scores)[::-1]
        place = place + RERANKED_LOWER
        inside = place < len(ranked)
        # Just above the item holding that place in the final order: the new product takes it.
        final[new_at[inside]] = ranked[place[inside]] + 1e-9
        new_at = new_at[inside]
    rows_at = np.concatenate([done.at, new_at])
    features = np.vstack([done.features, np.zeros((len(new_at), done.features.shape[1]))])
    return final, Reranked(rows_at, final[rows_at], features, candidates[rows_at])
