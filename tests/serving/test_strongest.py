"""A big basket's bounded first stage: each basket item's strongest table entries up to the budget, read the same by
every part of the answer (scores, the re-ranker's links, reasons), and baskets within the budget read as before."""

import numpy as np
import pytest

from recommender.serving import strongest
from recommender.serving.csr import ranges
from recommender.serving.merch_reasons import reasons
from recommender.serving.merchandising import Options, Scores
from recommender.serving.rerank_links import Incoming, link_features
from recommender.serving.reranker import Slots
from tests.serving.test_merchandising import codes, feed, plain, products, view  # noqa: F401
from tests.serving.test_tree_eval import _table


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_cap_is_the_largest_that_fits_the_budget(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        lengths = rng.integers(0, rng.integers(1, 300), size=rng.integers(1, 60))
        budget = int(rng.integers(1, max(2, lengths.sum())))
        if lengths.sum() <= budget:
            continue
        c = strongest.cap(lengths, budget)
        assert np.minimum(lengths, c).sum() <= budget < np.minimum(lengths, c + 1).sum()


def test_each_row_keeps_its_strongest_entries_in_basket_order():
    rng = np.random.default_rng(4)
    model = _table(rng, 200)
    order = strongest.WeightOrder(model.table_indptr, model.table_target, model.table_weight)
    indptr, weight = model.table_indptr, model.table_weight
    basket = np.sort(rng.choice(200, size=50, replace=False))
    lengths = indptr[basket + 1] - indptr[basket]
    read, targets, weights = order.read(basket, lengths, int(lengths.sum()) // 3)
    assert np.array_equal(targets, model.table_target[read]) and np.array_equal(weights, weight[read])
    assert len(read) <= int(lengths.sum()) // 3
    c = strongest.cap(lengths, int(lengths.sum()) // 3)
    sources = strongest.sources(indptr, basket, read)
    assert np.array_equal(sources, np.repeat(basket, np.minimum(lengths, c)))  # rows in basket order
    for row in basket.tolist():
        kept = read[sources == row]
        dropped = np.setdiff1d(np.arange(indptr[row], indptr[row + 1]), kept)
        assert len(kept) == min(indptr[row + 1] - indptr[row], c)
        assert not len(dropped) or weight[kept].min() >= weight[dropped].max()
    # every entry of the rows, as before, when the budget holds them all
    assert np.array_equal(strongest.sources(indptr, basket, ranges(indptr, basket)), np.repeat(basket, lengths))


def test_links_of_a_bounded_read_are_those_of_the_entries_read():
    # Backwards (the entries into the candidates) would find entries the bounded read left out: forwards then.
    rng = np.random.default_rng(5)
    n_items = 300
    model = _table(rng, n_items)
    incoming = Incoming.of(model.table_indptr, model.table_target)
    order = strongest.WeightOrder(model.table_indptr, model.table_target, model.table_weight)
    pop1 = rng.integers(1, 1000, size=n_items).astype(np.float64)
    basket = np.sort(rng.choice(n_items, size=200, replace=False))
    candidates = np.sort(rng.choice(np.setdiff1d(np.arange(n_items), basket), size=60, replace=False))
    lengths = model.table_indptr[basket + 1] - model.table_indptr[basket]
    read = order.read(basket, lengths, 500)[0]
    got = {}
    for way in (None, False):
        x = np.zeros((len(candidates), 23))
        link_features(model, basket, read, Slots(candidates, n_items), incoming, pop1, x, backwards=way)
        got[way] = x
    assert np.array_equal(got[None], got[False])
    full = np.zeros((len(candidates), 23))
    link_features(model, basket, ranges(model.table_indptr, basket), Slots(candidates, n_items), incoming, pop1, full)
    assert full[:, 8].sum() > got[None][:, 8].sum() > 0  # fewer links found than from every entry


@pytest.fixture
def bounded(plain, monkeypatch):
    """The tiny model with a budget its bigger baskets exceed."""
    monkeypatch.setattr(strongest, "BUDGET", 60)
    return plain


def _basket(model, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(model.items), size=size, replace=False)).astype(np.int64)


def test_a_big_baskets_scores_sum_its_items_strongest_entries_and_small_ones_every_entry(bounded, monkeypatch):
    model = bounded
    indptr = model.table_indptr
    seen = set()
    for size in (1, 2, 5, 12, 30):
        basket = _basket(model, size, size)
        total = int((indptr[basket + 1] - indptr[basket]).sum())
        candidates, scores, read = model.score_basket(basket)
        expected = np.bincount(model.table_target[read], weights=model.table_weight[read], minlength=len(model.items))
        assert np.array_equal(scores, expected)
        if total <= strongest.BUDGET:
            assert np.array_equal(read, ranges(indptr, basket))
        else:
            assert len(read) <= strongest.BUDGET < total
        seen.add(total > strongest.BUDGET)
        answer = model.recommend([model.items.codes[i] for i in basket], 5)
        monkeypatch.setattr(strongest, "BUDGET", 10**9)
        exact = model.recommend([model.items.codes[i] for i in basket], 5)
        monkeypatch.setattr(strongest, "BUDGET", 60)
        if total <= strongest.BUDGET:
            assert answer == exact
    assert seen == {True, False}


def test_reasons_of_a_bounded_basket_are_the_entries_it_summed(bounded, feed):
    model = view(bounded, feed)
    indptr, target, weight = model.table_indptr, model.table_target, model.table_weight
    allowed = model.policy.request_mask(Options()).copy()
    for seed in range(4):
        basket = _basket(model, 20, seed)
        assert int((indptr[basket + 1] - indptr[basket]).sum()) > strongest.BUDGET
        read = set(model.entries(basket).tolist())
        for scored in (Scores(model, basket, True, allowed), Scores(model, basket, True), Scores(model, basket, False)):
            assert set(scored.positions.tolist()) == read
            rows = scored.candidates[np.argsort(-scored(scored.candidates), kind="stable")[:6]]
            totals = scored(rows)
            for row, total, because in zip(rows.tolist(), totals.tolist(), reasons(model, scored, rows, totals)):
                summed = [at for b in basket.tolist() for at in range(indptr[b], indptr[b + 1]) if at in read]
                found = [at for at in summed if target[at] == row]
                assert sum(float(weight[at]) for at in found) == pytest.approx(total, abs=1e-9)
                assert len(because) == len(found)
                if total > 0:
                    assert sum(r["share"] for r in because) == pytest.approx(1.0, abs=1e-3)
