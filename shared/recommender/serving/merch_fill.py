"""The merchandised answer filled in one pass over the basket's candidates (numpy only): the eligible ones (one
lookup in the request's mask), their boosted scores (one factor per row), the best k selected, the category cap
and the new products' cap applied while the answer fills, the deeper and popular levels only when it is short,
then the pins put in at their positions, confidence, reasons and the picks.

An answer is chosen in levels, each filtered by the same eligibility (in stock, not blocked, not paired away from
the basket, not in the basket, passing the request's filters): the model's candidates (each basket item's nearest
items in the Annoy index) by score, then every other item the basket's items have a table weight for, then the
most popular items; so it holds exactly n items whenever n items are eligible. The pins the basket triggers are
chosen first (they count toward max_per_category) and put in at their positions once the rest is chosen.
"""

from __future__ import annotations

from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from recommender.serving import new_items
from recommender.serving.merch_policy import Eligibility, Policy
from recommender.serving.merch_reasons import NO_REASONS, ranked_by, reasons
from recommender.serving.merch_request import NO_OPTIONS, SOURCES, Options, Pick
from recommender.serving.merch_scores import Scores

EMPTY_ROWS = np.empty(0, dtype=np.int64)
EMPTY_SCORES = np.empty(0)
MODEL_SOURCE, POPULAR_SOURCE, PINNED_SOURCE, NEW_SOURCE = range(4)  # indexes into SOURCES
RANKS = np.arange(1.0, 1025.0)  # the ranks of an answer's picks (1 = first), for confidence
# Up to this many candidates one stable sort is cheaper than selecting the best few first.
SORT_ALL = 300
_make_pick = partial(tuple.__new__, Pick)  # a Pick as its NamedTuple __new__ makes it, without Python per pick
_position_then_row = itemgetter(1, 0)  # pins: (row, position) pairs


def fill(
    model: Any,
    basket: np.ndarray,
    n: int,
    options: Options | None,
    policy: Policy,
    learned: bool = True,
    dense: bool = True,
) -> tuple[list[Pick], bool, list[str]]:
    """The picks for a basket of known rows (possibly empty, sorted), best first, whether fewer than n were
    eligible, and warnings about the request (categories no item is in, pins beyond max_per_category).
    learned=False: nothing the model learned, the popular items only (an experiment's no-model control), under the
    same feed, rules (pins included) and options. dense: one array over every item per request (small models)."""
    options = options or NO_OPTIONS
    warnings = policy.category_warnings(options) if options.categories or options.exclude_categories else []
    ok = Eligibility(policy, basket, options, dense)
    cap = options.max_per_category
    taken: dict[int, int] = {}  # picks per category, with max_per_category
    # Pins are placed first: they count toward max_per_category, and the rest of the answer fills around them.
    pinned = _pinned(policy, basket, n, ok) if policy.pins and len(basket) else None
    if pinned:
        ok.take_rows(list(pinned))
        warnings += _count_pins(policy, pinned, cap, taken)
    k = n - len(pinned) if pinned else n  # the items to choose besides the pins
    # rows, their answer scores (boosted) and their final scores before the boost (what confidence reads)
    rows, scores, final = EMPTY_ROWS, EMPTY_SCORES, EMPTY_SCORES
    scored = None
    if len(basket) and learned:
        scored = Scores(model, basket, dense, ok.mask)
        rows, scores, final = _from_model(scored, basket, ok, policy, k, cap, taken)
        if len(scores) and scores[0] <= 0:
            # Nothing learned goes with the basket (no positive score): popular items instead, flagged fallback.
            rows, scores, final = rows[:0], scores[:0], final[:0]
            taken.clear()
            if pinned:
                _count_pins(policy, pinned, cap, taken)
    popular = len(rows) < k
    if popular:
        ok.take(rows)
        rows, scores, final, source_of = _with_popular(
            policy, ok, k, cap, taken, rows, scores, final, np.zeros(len(rows), dtype=np.int8)
        )
        source = source_of.tolist()  # index into SOURCES, per pick
    else:
        source = [MODEL_SOURCE] * len(rows)
    # From here on the answer is its n picks at most: Python lists, cheaper than numpy calls on a few items.
    row_list = rows.tolist()
    if policy.first_new < len(policy.eligible):
        first_new = policy.first_new
        source = [NEW_SOURCE if s == MODEL_SOURCE and r >= first_new else s for r, s in zip(row_list, source)]
    if pinned:
        score_list, final_list = scores.tolist(), final.tolist()
        _pin(policy, pinned, row_list, score_list, final_list, source, scored)
        if len(row_list) > n:
            del row_list[n:], score_list[n:], final_list[n:], source[n:]
        rows = np.asarray(row_list, dtype=np.int64)
        scores, final = np.asarray(score_list, dtype=np.float64), np.asarray(final_list, dtype=np.float64)
    elif len(row_list) > n:
        del row_list[n:], source[n:]
        rows, scores, final = rows[:n], scores[:n], final[:n]
    # Popular picks' confidence is read from their popularity, the others' from the model's score; without the
    # model's scores (nothing known, or learned=False), every pick's is a popular item's.
    popular_at = (
        (np.asarray(source) == POPULAR_SOURCE)
        if scored is not None and popular
        else (None if scored is not None else True)
    )
    # An answer the re-ranker left in the first stage's order (a basket of hundreds of items) has its own curve.
    first_stage = scored is not None and model.first_stage_orders(basket)
    score_list, confidence = _rounded(model, policy, rows, scores, final, popular_at, first_stage)
    if options.min_confidence is not None and confidence is not None:
        # Last, on the answer as it stands (pins included): confidence falls with the rank and rises with the
        # score, so items further down the list would not pass either.
        keep = [c >= options.min_confidence for c in confidence]
        if not all(keep):  # the ones left move up: their confidence at their new rank (no lower)
            at = np.asarray(keep)
            rows, final = rows[at], final[at]
            row_list, score_list, source = _kept(row_list, keep), _kept(score_list, keep), _kept(source, keep)
            if isinstance(popular_at, np.ndarray):
                popular_at = popular_at[at]
            found = _confidence(model, policy, rows, final, popular_at, first_stage)
            confidence = None if found is None else found.tolist()
    picks = _picks(
        model, policy, options, basket, scored, rows, row_list, score_list, final, source, confidence, popular
    )
    return picks, len(picks) < n, warnings


def _kept(values: list, keep: list[bool]) -> list:
    """The values where keep is true."""
    return [v for v, kept in zip(values, keep) if kept]


def _rounded(
    model: Any,
    policy: Policy,
    rows: np.ndarray,
    scores: np.ndarray,
    final: np.ndarray,
    popular: Any,
    first_stage: bool = False,
) -> tuple[list[float], list[float] | None]:
    """The picks' scores rounded to 4 places, and their confidence (_confidence, rounded; None without the
    model's calibration): one rounding call for both when confidence reads the score alone."""
    m = len(scores)
    calibration = getattr(model, "_confidence", None)
    if (
        m
        and popular is None
        and calibration is not None
        and calibration.by_score
        and getattr(model, "confidence", None) is not None
    ):
        both = np.concatenate((scores, calibration.scores(final, first_stage))).round(4).tolist()
        return both[:m], both[m:]
    confidence = _confidence(model, policy, rows, final, popular, first_stage)
    return scores.round(4).tolist(), None if confidence is None else confidence.tolist()


def _from_model(
    scored: Scores, basket: np.ndarray, ok: Eligibility, policy: Policy, k: int, cap: int | None, taken: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's picks: the best eligible candidates, then deeper ones (every other item the basket's items have
    a table entry for) when too few are eligible; the new products held to their share of the answer."""
    candidates, final = scored.candidates, scored.final_candidates
    most = new_items.per_answer(basket, policy.first_new) if policy.first_new < len(policy.eligible) else None
    if most is not None and cap is not None:  # _best counts the categories it picks: cap new products first
        candidates = new_items.capped(candidates, scored.final, ok, policy.first_new, most)
        final = scored.final(candidates)
    rows, scores, final_of = _best(candidates, final, ok, policy, k, cap, taken, scored.eligible_only)
    if most is not None and cap is None and np.count_nonzero(rows >= policy.first_new) > most:
        candidates = new_items.capped(candidates, scored.final, ok, policy.first_new, most)  # after the fact
        rows, scores, final_of = _best(candidates, scored.final(candidates), ok, policy, k, cap, taken)
    if len(rows) < k:
        # Deeper than the candidates: every other item the basket's items have a table entry for. Merged by
        # score (stable, so popularity still breaks ties) to keep the answer sorted.
        deeper = scored.deeper(basket)
        more, more_scores, more_final = _best(deeper, scored.final(deeper), ok, policy, k - len(rows), cap, taken)
        if len(more):
            rows, scores = np.concatenate([rows, more]), np.concatenate([scores, more_scores])
            final_of = np.concatenate([final_of, more_final])
            order = np.argsort(-scores, kind="stable")
            rows, scores, final_of = rows[order], scores[order], final_of[order]
    return rows, scores, final_of


def _best(
    rows: np.ndarray,
    final: np.ndarray,
    ok: Eligibility,
    policy: Policy,
    k: int,
    cap: int | None,
    taken: dict[int, int],
    eligible: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k best eligible rows (final: their scores; eligible: rows are known to be) by boosted score (stable),
    within the per-category cap: the rows, their boosted scores and their final scores."""
    if not eligible:
        keep = ok.mask[rows] if ok.mask is not None else ok(rows)
        rows, final = rows[keep], final[keep]
    factor = policy.factor
    if factor is None:
        scores = final
    elif cap is None:
        # A boost keeps a score's sign, and a negative score is divided rather than multiplied: multiplying every
        # score ranks the positive ones exactly, and ranks every negative one below them. So unless the best k
        # reach a score <= 0, that is the answer, one division pass the fewer.
        scores = final * factor.take(rows)  # take: no index conversion (a few of these per answer add up)
        order = top_positions(scores, k)
        if not len(order) or scores[order[-1]] > 0:
            return rows.take(order), scores.take(order), final.take(order)
        scores = policy.boosted(rows, final)
    else:
        scores = policy.boosted(rows, final)
    if cap is None:
        order = top_positions(scores, k)
    else:
        order = (-scores).argsort(kind="stable")
        order = order[_capped(rows[order], policy, k, cap, taken)]
    return rows[order], scores[order], final[order]


def top_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """The positions of the k best scores, best first, ties in position order (what a full stable sort gives)."""
    m = len(scores)
    if m > SORT_ALL and m > 2 * k > 0:
        # Only the k best are needed: every score at least the k-th best (ties included, still in position order),
        # then a stable sort of those few.
        # (ndarray methods rather than numpy's module functions: those add a Python wrapper's microsecond)
        kth = scores.copy()
        kth.partition(m - k)
        top = (scores >= kth[m - k]).nonzero()[0]
        return top.take((-scores.take(top)).argsort(kind="stable")[:k])
    return (-scores).argsort(kind="stable")[:k]


def _capped(rows: np.ndarray, policy: Policy, k: int, cap: int, taken: dict[int, int]) -> list[int]:
    """The positions of the first k rows that keep every category within cap picks (items without a category are
    not limited); taken counts the picks per category so far and is updated."""
    keep = []
    for j, category in enumerate(policy.leaf[rows].tolist()):
        if len(keep) >= k:
            break
        if category >= 0:
            if taken.get(category, 0) >= cap:
                continue
            taken[category] = taken.get(category, 0) + 1
        keep.append(j)
    return keep


def _with_popular(
    policy: Policy,
    ok: Eligibility,
    k: int,
    cap: int | None,
    taken: dict[int, int],
    rows: np.ndarray,
    scores: np.ndarray,
    final: np.ndarray,
    source: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The answer filled up with the most popular items that pass the same filters: scored no higher than the last
    pick, or, when the model picked nothing (nothing known or learned, or everything filtered), by popularity (the
    plain fallback's)."""
    extra = _popular(policy, ok, k - len(rows), cap, taken)
    if len(rows):
        extra_scores = np.full(len(extra), min(0.0, float(scores[-1])))
    else:
        extra_scores = policy.boosted(extra, _popularity_score(policy, extra))
        order = np.argsort(-extra_scores, kind="stable")
        extra, extra_scores = extra[order], extra_scores[order]
    ok.take(extra)
    return (
        np.concatenate([rows, extra]),
        np.concatenate([scores, extra_scores]),
        np.concatenate([final, np.zeros(len(extra))]),  # popular picks' confidence reads their popularity
        np.concatenate([source, np.ones(len(extra), dtype=np.int8)]),
    )


def _popular(policy: Policy, ok: Eligibility, k: int, cap: int | None, taken: dict[int, int]) -> np.ndarray:
    """The k most popular eligible rows (within the category cap), read a block of the popularity order at a time."""
    found: list[np.ndarray] = []
    need, start, block = k, 0, max(64, 4 * k)
    while need > 0 and start < len(policy.popular):
        chunk = policy.popular[start : start + block]
        chunk = chunk[ok(chunk)]
        chunk = chunk[:need] if cap is None else chunk[_capped(chunk, policy, need, cap, taken)]
        found.append(chunk)
        need -= len(chunk)
        start += block
        block *= 4
    return np.concatenate(found) if found else EMPTY_ROWS


def _popularity_score(policy: Policy, rows: np.ndarray) -> np.ndarray:
    """Each row's popularity relative to the best seller's (the popular picks' score)."""
    return np.round(policy.popularity[rows] / policy.best_popularity, 4)


def _pinned(policy: Policy, basket: np.ndarray, n: int, ok: Eligibility) -> dict[int, int]:
    """The pins the basket triggers ({row: position}), where the item passes every filter and the position is
    within the answer."""
    pinned: dict[int, int] = {}
    for b in basket.tolist():
        for row, position in policy.pins.get(b, ()):
            if position <= n and (row in pinned or ok.allows(row)):
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
    policy: Policy,
    pinned: dict[int, int],
    rows: list[int],
    scores: list[float],
    final: list[float],
    source: list[int],
    scored: Scores | None,
) -> None:
    """The pinned items put in at their positions whatever their score (a merchandiser's choice), lowest position
    first, so pins do not shift one another (in the answer's lists, in place). Without the model's scores
    (learned=False), a pin scores its popularity, as the popular picks do."""
    order = sorted(pinned.items(), key=_position_then_row)
    pinned_rows = [row for row, _position in order]
    if scored is None:
        values = _popularity_score(policy, np.asarray(pinned_rows, dtype=np.int64)).tolist()
    elif scored.dense is not None and scored.reranked is None:
        values = list(map(scored.dense.item, pinned_rows))  # the first-stage scores, each read as a float
    else:
        values = scored.final(np.asarray(pinned_rows, dtype=np.int64)).tolist()
    for (row, position), value in zip(order, values):
        rows.insert(position - 1, row)
        scores.insert(position - 1, value)
        final.insert(position - 1, value)
        source.insert(position - 1, PINNED_SOURCE)


def _confidence(
    model: Any,
    policy: Policy,
    rows: np.ndarray,
    final: np.ndarray,
    popular: np.ndarray | bool | None,
    first_stage: bool = False,
) -> np.ndarray | None:
    """The model's calibrated confidence of each pick at its rank (1 = first), from the model's own score (final:
    before any boost; for popular picks, popularity / top popularity); None when the model has no calibration
    code. popular: which picks are popular ones (None: none, True: all); first_stage: the answer keeps the first
    stage's order (Model.first_stage_orders)."""
    confidence = getattr(model, "confidence", None)
    if confidence is None:
        return None
    m = len(rows)
    if not m:
        return np.empty(0)  # everything filtered out
    if popular is None:
        # The model's calibration read from the score alone (every current calibration file): one numpy call.
        calibration = getattr(model, "_confidence", None)
        if calibration is not None and calibration.by_score:
            return calibration.scores(final, first_stage).round(4)
    ranks = RANKS[:m] if m <= len(RANKS) else np.arange(1.0, m + 1.0)
    if popular is None or (popular is not True and not popular.any()):
        return confidence(final, ranks, first_stage=first_stage).round(4)
    if popular is True:
        return confidence(policy.popularity[rows] / policy.best_popularity, ranks, popular=True).round(4)
    out = np.empty(m)
    if not popular.all():
        model_rows = ~popular
        out[model_rows] = confidence(final[model_rows], ranks[model_rows], first_stage=first_stage)
    top = policy.best_popularity
    out[popular] = confidence(policy.popularity[rows[popular]] / top, ranks[popular], popular=True)
    return out.round(4)


def _picks(
    model: Any,
    policy: Policy,
    options: Options,
    basket: np.ndarray,
    scored: Scores | None,
    rows: np.ndarray,
    row_list: list[int],
    scores: list[float],
    final: np.ndarray,
    source: list[int],
    confidence: list[float] | None,
    popular: bool,
) -> list[Pick]:
    """The answer's picks (rows and row_list: the same rows; final: their scores before any boost), with their
    reasons when asked for (popular: whether some picks may be popular ones)."""
    count = len(row_list)
    nothing = repeat(None)  # a field no pick has (zip stops with the rows)
    because: Any = nothing
    if options.explain:
        # Without a re-ranker the picks' final scores are their first-stage ones, what the reasons divide by.
        first = final if scored is not None and scored.reranked is None else None
        if scored is None:
            because = [NO_REASONS] * count
        elif popular:  # popular picks have no reasons
            model_pick = np.asarray(source) != POPULAR_SOURCE
            found = iter(reasons(model, scored, rows[model_pick], None if first is None else first[model_pick]))
            because = [next(found) if pick else NO_REASONS for pick in model_pick.tolist()]
        else:
            because = reasons(model, scored, rows, first)
    ranked: Any = nothing
    if options.explain and scored is not None and scored.reranked is not None:
        ranking = ranked_by(model, scored, basket, rows)
        if ranking:
            ranked = [ranking.get(row) for row in row_list]
    boost_of = policy.boost_of
    boosts = [boost_of[row] for row in row_list] if boost_of is not None else nothing
    sources = [SOURCES[s] for s in source]
    items = model.items.take(row_list)
    shown = policy.shown_rows(row_list)
    likes: Any = nothing
    first_new = policy.first_new
    if first_new < len(policy.eligible) and count and max(row_list) >= first_new:
        twins = policy.placement.twins
        likes = [model.items[int(twins[row - first_new, 0])] if row >= first_new else None for row in row_list]
    return list(
        map(
            _make_pick,
            zip(items, scores, sources, confidence or nothing, because, boosts, row_list, shown, ranked, likes),
        )
    )
