"""The learned re-ranker: trees exported from LightGBM score exactly as LightGBM does, validation periods never touch
the held-out baskets, serving computes the features training learned from, and answers keep their promises."""

import json

import numpy as np
import pytest

from recommender.core import registry
from recommender.core.storage import LocalStorage
from recommender.serving.merchandising import Options
from recommender.serving.model import load_model
from recommender.serving.reranker import FEATURES, Trees
from recommender.training import holdout
from recommender.training import reranker as training_reranker
from recommender.training.ingest import load_transactions
from recommender.training.recipe import TrainingParams

lightgbm = pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def model(reranked_folder):
    storage = LocalStorage(reranked_folder)
    return load_model(storage, registry.active_version(storage))


def _booster(seed: int, objective: str = "lambdarank"):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3000, 6))
    x[:, 5] = rng.integers(0, 4, size=3000)  # a column of ties, as counts are
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(scale=0.5, size=3000) > 1.2).astype(float)
    data = lightgbm.Dataset(x, y, group=[30] * 100)
    params = {"objective": objective, "num_leaves": 15, "max_depth": 6, "verbosity": -1, "seed": seed, "num_threads": 1}
    return lightgbm.train(params, data, num_boost_round=40)


@pytest.mark.parametrize("seed", [0, 1])
def test_exported_trees_score_as_lightgbm(seed):
    booster = _booster(seed)
    trees = training_reranker.export(booster)
    rows = np.random.default_rng(seed + 10).normal(size=(500, 6)) * 2
    rows[:, 5] = np.random.default_rng(seed).integers(0, 4, size=500)  # exactly on thresholds too
    expected = booster.predict(rows)
    got = trees.score(rows)
    assert np.abs(got - expected).max() < 1e-6
    assert np.array_equal(np.argsort(-got, kind="stable"), np.argsort(-expected, kind="stable"))
    # Path contributions add up to the score; the stored form scores the same.
    assert np.allclose(trees.contributions(rows).sum(axis=1), got, atol=1e-9)
    assert np.array_equal(Trees.from_arrays(trees.to_arrays()).score(rows), got)
    # scored by leaf bitmasks (serving/tree_eval.py): the walk's leaves, its scores bit for bit
    assert trees.fast is not None
    assert np.array_equal(trees.fast.leaves(rows), trees.leaves(rows))
    assert np.array_equal(got, trees.value.take(trees.leaves(rows)).sum(axis=1))


def test_members_trees_score_the_mean_of_their_boosters():
    boosters = [_booster(0), _booster(1), _booster(2, "lambdarank")]
    trees = training_reranker.mean_of([training_reranker.export(b) for b in boosters])
    rows = np.random.default_rng(5).normal(size=(400, 6)) * 2
    expected = np.mean([b.predict(rows) for b in boosters], axis=0)
    got = trees.score(rows)
    assert len(trees.roots) == sum(b.num_trees() for b in boosters)
    assert np.abs(got - expected).max() < 1e-6
    assert np.allclose(trees.contributions(rows).sum(axis=1), got, atol=1e-9)
    assert trees.fast is not None and np.array_equal(trees.fast.leaves(rows), trees.leaves(rows))


def test_members_split_the_validation_baskets_into_folds():
    baskets = np.repeat(np.arange(40), 5)  # 40 baskets of 5 queries
    found = np.random.default_rng(0).random(len(baskets)) < 0.8
    rows = training_reranker.Rows(np.zeros((0, len(FEATURES))), np.zeros(0), np.zeros(0, dtype=np.intp), baskets, found)
    members = training_reranker._members(rows, training_reranker.RerankParams(members=4))
    selected = np.concatenate([sel for _fit, sel in members])
    assert sorted(selected.tolist()) == list(range(len(baskets)))  # every query validated once
    for fit, sel in members:
        assert not set(baskets[fit].tolist()) & set(baskets[sel].tolist())  # never fitted on its own fold's baskets
        assert found[fit].all() and len(fit) == found.sum() - found[sel].sum()
        assert len(set(baskets[sel].tolist())) == 10


def test_a_reranker_of_several_members_is_validated_on_every_basket(tiny_csv):
    from dataclasses import replace

    from recommender.training import engine
    from tests.conftest import TINY_RERANK

    tx = load_transactions(tiny_csv)
    assert TINY_RERANK.rerank.members == 3  # the default
    three = engine.fit_reranker(tx, TINY_RERANK, lambda _m: None)
    one = engine.fit_reranker(tx, replace(TINY_RERANK, rerank=replace(TINY_RERANK.rerank, members=1)), lambda _m: None)
    assert one.spec["members"] == 1 and three.spec["members"] == 3
    assert three.spec["num_trees"] == len(three.trees.roots)
    # one member selects on a quarter of the validation baskets' queries; three, each on its fold: all of them
    queries = sum(p["queries"] for p in three.spec["periods"])
    assert three.spec["validation"]["queries"] == queries > one.spec["validation"]["queries"]


def test_validation_periods_never_overlap_the_held_out_baskets(tiny_csv):
    tx = load_transactions(tiny_csv)
    params = TrainingParams(rerank=training_reranker.RerankParams(days=60, min_baskets=20, periods=3))
    train_tx, held = holdout.split(tx, params.holdout)
    periods = training_reranker.carve(train_tx, params.rerank)
    assert periods
    held_ids = set(held.basket_ids)
    for mask in periods:
        ids = {train_tx.basket_ids[b] for b in np.flatnonzero(mask)}
        assert not ids & held_ids
        assert train_tx.basket_time[mask].max() <= held.cutoff
    for a in range(len(periods)):  # and never one another
        for b in range(a + 1, len(periods)):
            assert not (periods[a] & periods[b]).any()


def test_the_measured_models_periods_end_before_the_held_out_baskets(model):
    spec = model.manifest["model"]["rerank"]
    assert spec["trees"] and spec["features"] == list(FEATURES)
    evaluation = model.manifest["evaluation"]
    assert evaluation["rerank_periods"][-1]["last"] < evaluation["cutoff"]
    # the published model learns from every basket, its re-ranker from the file's most recent period
    assert spec["periods"][-1]["last"] > evaluation["cutoff"]


def test_features_at_serving_equal_training(model):
    index = model.items.index
    for start in range(0, 30, 5):
        basket = [model.items.codes[(start + k * 7) % len(model.items)] for k in range(3)]
        hidden = model.items.codes[(start + 1) % len(model.items)]
        trained = training_reranker.training_rows(model, [(0, basket, hidden)])
        rows = np.asarray(sorted(index[c] for c in basket), dtype=np.int64)
        candidates, scores, positions = model.score_basket(rows)
        _final, served = model.final_scores(rows, candidates, scores[candidates], positions)
        assert np.array_equal(trained.x, served.features)
        # the trees see what training computed: the final order follows their scores
        assert np.array_equal(served.scores, 0.5 + 0.5 / (1 + np.exp(-model.reranker.trees.score(trained.x))))


def test_answers_follow_the_trees_and_explain_them(model):
    first = model.first_stage()
    differs = checked = 0
    for start in range(0, 40, 3):
        basket = [model.items.codes[(start + k * 5) % len(model.items)] for k in range(2)]
        answer = model.recommend(basket, 10, Options(explain=True))
        picks = [p for p in answer.items if p.source == "model"]
        scores = [p.score for p in answer.items]
        assert scores == sorted(scores, reverse=True)
        confidence = [p.confidence for p in answer.items if p.source == "model"]
        assert confidence == sorted(confidence, reverse=True)
        for p in picks:
            if p.score > 0.5:  # re-ranked: explained in words, at most three features that moved it up
                assert p.ranked_by and len(p.ranked_by) <= 3
                assert all(r["contribution"] > 0 and r["text"] and r["feature"] in FEATURES for r in p.ranked_by)
                for r in p.ranked_by:
                    if r["text"].startswith("bought with "):  # the basket item bought with it most, truly counted
                        together = {b["description"]: b["baskets"] for b in p.because.as_list()}
                        assert any(r["text"] == f"bought with {d} in {n:,} baskets" for d, n in together.items())
                        checked += 1
            if p.because:  # the item-item part's exact shares, as without a re-ranker
                assert sum(r["share"] for r in p.because.as_list()) == pytest.approx(1.0, abs=1e-9)
        plain = [s.item.stock_code for s in model.recommend(basket, 10).items]
        assert plain == [p.item.stock_code for p in answer.items]
        differs += plain != [s.item.stock_code for s in first.recommend(basket, 10).items]
    assert differs  # the trees do re-order
    assert checked


def test_without_lightgbm_training_says_so_and_keeps_the_first_stage(tiny_csv, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "lightgbm", None)  # what `import lightgbm` meets when absent
    said = []
    fitted = training_reranker.fit(
        load_transactions(tiny_csv), lambda _tx, _folder: None, training_reranker.RerankParams(), said.append
    )
    assert fitted is None
    assert said == [
        "re-ranker: lightgbm is not installed (pip install lightgbm): the model ranks by its first stage alone"
    ]


def test_the_reranker_is_trained_only_when_asked_for() -> None:
    """make train keeps the first stage unless RERANK=1 (--rerank); make evaluate always trains the re-ranker."""
    import inspect

    from recommender import cli
    from recommender.tools import evaluation

    assert TrainingParams().rerank.enabled is False
    assert inspect.signature(evaluation.run).parameters["params"].default.rerank.enabled is True
    parser = cli.build_parser()
    assert parser.parse_args(["train", "x.csv"]).rerank is False
    assert parser.parse_args(["train", "--rerank", "x.csv"]).rerank is True


def test_a_big_basket_reads_a_bounded_share_of_each_items_postings():
    """Each kNN feature reads at most its budget of postings per basket, each item's most recent first."""
    from recommender.serving.reranker import Postings

    n_items, per_item = 60, 100
    item_ptr = np.arange(n_items + 1) * per_item
    item_rows = np.arange(n_items * per_item)  # item i's postings: rows i*100 .. i*100+99, most recent first
    row_ptr = np.arange(n_items * per_item + 1)
    row_items = np.repeat(np.arange(n_items), per_item)  # each past row holds its one item
    postings = Postings(item_ptr, item_rows, row_ptr, row_items, budget=1000)
    basket = np.arange(50)  # 50 items: 20 postings each
    rows, sim, overlap = postings.nearest(basket, k=10_000)
    assert len(rows) == 50 * 20
    assert set((rows % per_item).tolist()) == set(range(20))  # each item's 20 most recent rows
    few = postings.nearest(np.arange(5), k=10_000)[0]
    assert len(few) == 5 * per_item  # a small basket reads every posting


def test_the_trees_rerank_the_best_served_of_the_candidates_they_learned_from(model):
    """Answers re-rank the best `served` candidates; a candidate's features (so its final score) do not depend on
    the others re-ranked with it, which is what lets serving re-rank fewer than training learned from."""
    import copy

    spec = model.manifest["model"]["rerank"]
    assert model.reranker.depth == spec["served"] == training_reranker.RerankParams().served < spec["candidates"]
    deeper, fewer = copy.copy(model.reranker), copy.copy(model.reranker)
    deeper.depth, fewer.depth = spec["candidates"], 5  # the tiny data's baskets have a few dozen candidates
    compared = 0
    for start in range(0, 60, 4):
        basket = np.asarray(sorted({(start + k * 7) % len(model.items) for k in range(4)}), dtype=np.int64)
        candidates, scores, positions = model.score_basket(basket)
        first = scores[candidates]
        served = fewer.rerank(model, basket, candidates, first, positions)
        full = deeper.rerank(model, basket, candidates, first, positions)
        assert len(served.at) == min(len(full.at), fewer.depth)
        within = np.searchsorted(full.at, served.at)
        assert np.array_equal(full.at[within], served.at)
        assert np.array_equal(full.features[within], served.features)
        assert np.array_equal(full.scores[within], served.scores)
        compared += len(full.at) > len(served.at)
    assert compared  # some baskets had more candidates than are served


def test_a_model_without_a_served_count_reranks_all_its_candidates(model, reranked_folder):
    """Models trained before `served` existed keep re-ranking every candidate they learned from (their answers)."""
    from recommender.serving.reranker import RERANK_FILE, Reranker

    (stored,) = reranked_folder.rglob(RERANK_FILE)
    with np.load(stored) as data:
        arrays = dict(data)
    assert int(arrays["served"]) == model.reranker.depth
    del arrays["served"]
    assert Reranker(arrays, model.items.popularity).depth == int(arrays["candidates"]) == 100


def test_a_basket_beyond_max_basket_keeps_its_first_stage_order(model, reranked_folder):
    """Baskets of more than max_basket known items are answered by the first stage alone, the same items in the same
    order, with or without the feed's merchandising; smaller ones are re-ranked as before."""
    import copy

    from recommender.serving.confidence import Confidence
    from recommender.serving.reranker import RERANK_FILE, Reranker

    assert model.reranker.max_basket == model.manifest["model"]["rerank"]["max_basket"]
    assert model.reranker.max_basket == training_reranker.RerankParams().max_basket
    bounded = copy.copy(model)
    bounded.reranker = copy.copy(model.reranker)
    bounded.reranker.max_basket = 3
    first = model.first_stage()
    beyond = within = 0
    for start in range(0, 40, 3):
        for size in (3, 4, 6):
            basket = [model.items.codes[(start + k * 5) % len(model.items)] for k in range(size)]
            answer = [s.item.stock_code for s in bounded.recommend(basket, 10).items]
            explained = bounded.recommend(basket, 10, Options(explain=True)).items
            assert answer == [p.item.stock_code for p in explained]
            if size > 3:
                assert answer == [s.item.stock_code for s in first.recommend(basket, 10).items]
                assert all(p.score < 0.5 and not p.ranked_by for p in explained)  # nothing re-ranked
                beyond += 1
            else:
                assert answer == [s.item.stock_code for s in model.recommend(basket, 10).items]
                within += any(p.score > 0.5 for p in explained)
    assert beyond and within
    # Their confidence reads the calibration's curve for answers in the first stage's order.
    spec = json.loads(json.dumps(model._confidence.spec))
    spec["first_stage"] = {"curve": {"x": [0.0, 1.0], "y": [0.77, 0.77]}}
    bounded._confidence = Confidence(spec)
    big = [model.items.codes[(k * 5) % len(model.items)] for k in range(6)]
    small = big[:3]
    assert {p.confidence for p in bounded.recommend(big, 10, Options(explain=True)).items} == {0.77}
    assert 0.77 not in {p.confidence for p in bounded.recommend(small, 10, Options(explain=True)).items}
    rows = np.asarray(sorted(model.items.index[c] for c in big))
    assert bounded.first_stage_orders(rows) and not bounded.first_stage_orders(rows[:3])
    assert not model.first_stage_orders(rows)
    # The trained file has that curve, from the first stage's own answers (squashed: below every re-ranked score).
    first = model._confidence.spec["first_stage"]
    assert first["observations"] >= 120 and first["curve"]["x"] and max(first["curve"]["x"]) < 0.5
    (stored,) = reranked_folder.rglob(RERANK_FILE)
    with np.load(stored) as data:
        arrays = dict(data)
    del arrays["max_basket"]  # a model trained before the bound re-ranks every basket
    assert Reranker(arrays, model.items.popularity).max_basket >= 2**62


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_candidates_chosen_are_a_stable_sorts_best(seed):
    """choose() keeps what a stable sort by score would cut at `depth` (ties at the cut: the lower positions)."""
    from recommender.serving.reranker import Reranker

    rng = np.random.default_rng(seed)
    rr = Reranker.__new__(Reranker)
    for depth in (1, 5, 50, 400):
        rr.depth = depth
        first = rng.choice([-1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 2.0], size=300)  # many ties, some not positive
        positive = np.flatnonzero(first > 0)
        expected = np.sort(positive[np.argsort(-first[positive], kind="stable")][:depth])
        assert np.array_equal(rr.choose(np.arange(300), first), expected)


def test_answers_equal_the_full_sort_of_every_candidates_final_score(model):
    """The answer's n best come from the re-ranked candidates alone when they are at least n: the same rows and
    scores as sorting every candidate's final score."""
    from recommender.serving.merch_fill import top_positions

    for start in range(0, 60, 3):
        basket = np.asarray(sorted({(start + k * 5) % len(model.items) for k in range(3)}), dtype=np.int64)
        candidates, scores, positions = model.score_basket(basket)
        final, _ = model.final_scores(basket, candidates, scores[candidates], positions)
        for n in (1, 10, 60):
            order = top_positions(final, n)
            rows, got = model._rank(basket, n)
            k = min(n, len(order))
            assert np.array_equal(rows[:k], candidates[order]) and np.array_equal(got[:k], final[order])
