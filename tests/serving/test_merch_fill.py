"""The merchandised answer filled in one pass (serving/merch_fill.py) against a direct reading of the feed and the
rules over every candidate, and the policy's remembered request masks left as they were by every request."""

import numpy as np

from recommender.serving.merch_reasons import reasons
from recommender.serving.merchandising import Options, Scores
from tests.serving.test_merchandising import anchors, codes, feed, kit, no_rules, plain, products, view  # noqa: F401


def direct(model, basket_codes, options):
    """Every eligible candidate of a basket, best first, as a plain reading of the rules ranks them: the basket's
    Annoy neighbours, in stock, not blocked, not excluded, within price_max, boosted (a negative score divided by
    the factor, so a boost always raises), stably sorted; with their rounded scores."""
    policy = model.policy
    index = model.items.index
    basket = np.asarray(sorted(index[c] for c in basket_codes), dtype=np.int64)
    scored = Scores(model, basket)
    candidates = scored.candidates
    final = scored.final(candidates)
    ok = policy.eligible[candidates] & ~np.isin(candidates, [index[c] for c in options.exclude])
    if options.price_max is not None:
        ok &= policy.price[candidates] <= options.price_max
    rows, score = candidates[ok], final[ok]
    factor = policy.factor[rows]
    boosted = np.where(score >= 0, score * factor, score / factor)
    order = np.argsort(-boosted, kind="stable")
    return [model.items.codes[i] for i in rows[order]], np.round(boosted[order], 4).tolist()


def test_the_answer_is_the_direct_reading_of_the_rules_negative_scores_included(plain, feed):
    pool = anchors(plain, 30)
    # Boosts and buries over the popular items, so that the best candidates move both ways.
    boosts = [{"code": [c], "factor": f} for c, f in zip(pool, [50.0, 0.02, 3.0, 0.5, 1e-3, 7.0] * 5)]
    model = view(plain, feed, no_rules(boost=boosts, block={"codes": pool[20:22], "categories": [], "brands": []}))
    compared, negative = 0, 0
    for k, code in enumerate(pool):
        basket = [code, pool[(k + 7) % len(pool)]][: 1 + k % 2]
        options = Options(exclude=(pool[(k + 3) % len(pool)],), price_max=None if k % 3 else 4.0, explain=k % 2 == 0)
        expected, scores = direct(model, basket, options)
        if not expected or scores[0] <= 0:
            continue  # nothing learned goes with it: the popular fallback, not this reading
        # As many as there are eligible candidates: the answer is theirs alone, so it is exactly their order.
        answer = model.recommend(basket, len(expected), options)
        assert codes(answer) == expected and [p.score for p in answer.items] == scores
        assert {p.source for p in answer.items} == {"model"}
        compared += 1
        negative += scores[-1] < 0
    assert compared >= 20 and negative >= 5  # answers reaching scores below 0 take the exact boost too


def test_the_eligible_candidates_read_in_the_scoring_pass_are_the_others_filtered(plain, feed):
    model = view(plain, feed, no_rules(block={"codes": anchors(plain, 40)[::3], "categories": [], "brands": []}))
    allowed = model.policy.request_mask(Options(price_max=3.0)).copy()
    for code in anchors(plain, 20):
        basket = np.asarray([plain.items.index[code]], dtype=np.int64)
        allowed_here = allowed.copy()
        allowed_here[basket] = False
        every = Scores(model, basket, True)
        fused = Scores(model, basket, True, allowed_here)
        assert fused.eligible_only == (plain.reranker is None)
        if fused.eligible_only:
            assert np.array_equal(fused.candidates, every.candidates[allowed_here[every.candidates]])
            assert np.array_equal(fused.dense, every.dense) and np.array_equal(fused.targets, every.targets)


def test_a_request_leaves_the_remembered_masks_as_they_were(plain, feed):
    model = view(plain, feed)
    code = anchors(plain)[0]
    options = Options(price_max=1e6)
    first = codes(model.recommend([code], 10, options))
    excluded = codes(model.recommend([code], 10, Options(price_max=1e6, exclude=tuple(first[:3]))))
    assert not set(first[:3]) & set(excluded)
    # The same filters again: nothing the last request excluded, nor its basket, stayed out.
    assert codes(model.recommend([code], 10, options)) == first
    for other in first[:3]:
        assert codes(model.recommend([other], 10, options)) == codes(view(plain, feed).recommend([other], 10, options))


def test_reasons_from_the_slices_read_are_those_from_the_entries_positions(plain, feed):
    # The masked scoring reads each basket row's entries as a slice of the table; the reasons then find a pick's
    # entry from the slice it falls in. The same reasons as from the positions of every entry read.
    model = view(plain, feed)
    allowed = model.policy.request_mask(Options()).copy()
    pool = anchors(plain, 30)
    compared = 0
    for k, code in enumerate(pool):
        basket = np.asarray(sorted({plain.items.index[c] for c in (code, pool[(k + 5) % 30], pool[(k + 11) % 30])}))
        basket = basket[: 1 + k % 3]
        every = Scores(model, basket, True)
        fused = Scores(model, basket, True, allowed)
        if not fused.eligible_only:
            continue  # the re-ranked model reads every candidate: no slices
        assert fused.slice_ends() is not None and np.array_equal(fused.positions, every.positions)
        rows = every.candidates[np.argsort(-every.final_candidates, kind="stable")[:10]]
        expected = [b.as_list() for b in reasons(model, every, rows)]
        got = [b.as_list() for b in reasons(model, fused, rows)]
        assert got == expected and any(expected)
        compared += 1
    assert compared >= 20 or plain.reranker is not None


def test_confidence_by_score_is_the_call_at_any_rank(plain):
    calibration = plain._confidence
    scores = np.linspace(-0.5, 2.0, 101)
    assert calibration.by_score
    for rank in (1, 7, 40):
        assert np.array_equal(calibration.scores(scores), plain.confidence(scores, np.full(101, rank)))


def test_an_empty_basket_reads_no_slices_and_gives_no_reasons(plain, feed):
    model = view(plain, feed)
    empty = np.empty(0, dtype=np.int64)
    scored = Scores(model, empty, True, model.policy.request_mask(Options()).copy())
    assert not len(scored.candidates) and not scored.dense.any() and not len(scored.positions)
    assert [b.as_list() for b in reasons(model, scored, np.asarray([1, 2]), np.asarray([1.0, 2.0]))] == [[], []]


def brute_reasons(model, basket, rows, totals):
    """Each row's reasons read entry by entry from the table: (code, share, baskets), largest share first, equal
    shares in basket order; none for a row scored 0."""
    indptr, target, weight, count = model.table_indptr, model.table_target, model.table_weight, model.table_count
    out = []
    for row, total in zip(rows.tolist(), totals.tolist()):
        found = []
        for b in basket.tolist() if total != 0 else ():
            for at in range(indptr[b], indptr[b + 1]):
                if target[at] == row:
                    found.append((model.items.codes[b], float(weight[at]) / total, int(count[at])))
        out.append(sorted(found, key=lambda reason: -reason[1]))  # stable: ties in basket order
    return out


def test_reasons_on_every_path_are_the_table_read_entry_by_entry_rows_scored_0_without(plain, feed):
    # The slices read (masked), every entry's position (unmasked) and the many-items path (sorted rows reached).
    # Two picks in the middle are given a score of 0 (as a pin the basket does not reach has): though the basket
    # reaches them, they get no reasons, and the others' are left as they are.
    model = view(plain, feed)
    allowed = model.policy.request_mask(Options()).copy()
    pool = anchors(plain, 30)
    for k, code in enumerate(pool[:12]):
        basket = np.asarray(sorted({plain.items.index[c] for c in (code, pool[(k + 5) % 30], pool[(k + 9) % 30])}))
        for scored in (Scores(model, basket, True, allowed), Scores(model, basket, True), Scores(model, basket, False)):
            totals = scored(scored.candidates)
            rows = scored.candidates[np.argsort(-totals, kind="stable")[:8]]
            totals = scored(rows)
            totals[3:5] = 0.0
            expected = brute_reasons(model, basket, rows, totals)
            got = [
                [(r["stock_code"], r["share"], r["baskets"]) for r in b] for b in reasons(model, scored, rows, totals)
            ]
            assert got == expected and all(expected[:3]) and not any(expected[3:5])
            assert [[r["share"] for r in b] for b in reasons(model, scored, rows)][:3] == [
                [share for _code, share, _count in e] for e in expected[:3]
            ]


def test_row_bounds_follow_the_models_table(plain):
    from recommender.serving.merch_scores import row_bounds

    bounds = row_bounds(plain)
    assert np.array_equal(bounds[:, 0], plain.table_indptr[:-1]) and np.array_equal(
        bounds[:, 1], plain.table_indptr[1:]
    )
    assert row_bounds(plain) is bounds  # made once
    other = plain.with_policy(None)
    other.table_indptr = plain.table_indptr.copy()
    other.table_indptr[1:] += 1  # another table (a view with new products has its own)
    assert row_bounds(other)[0, 1] == plain.table_indptr[1] + 1 and row_bounds(plain) is bounds
