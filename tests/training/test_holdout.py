"""Held-out evaluation at training: which baskets are kept out, the figures in the manifest, the stored cases."""

import numpy as np
import pandas as pd

from recommender.core import registry
from recommender.core.storage import LocalStorage
from recommender.serving.model import load_model
from recommender.training import holdout
from recommender.training.holdout import HoldoutPolicy, split, split_mask
from recommender.training.ingest import load_transactions


def test_policy_size_small_medium_large():
    policy = HoldoutPolicy()
    assert policy.size(20) == 0  # 25% of 20 is 5: too few to measure anything
    assert policy.size(660) == 165  # a week of Online Retail: at most a quarter
    assert policy.size(20_545) == 1027  # a year of it: 5%
    assert policy.size(1_000_000) == 2000  # capped


def test_split_mask_most_recent_dated_then_file_order():
    t = np.array(
        ["2011-01-05", "NaT", "2011-01-01", "2011-01-09", "2011-01-09", "2011-01-02"] * 10, dtype="datetime64[s]"
    )
    mask = split_mask(t, HoldoutPolicy(share=0.2, min_baskets=0))
    assert mask.sum() == 10  # 20% of the 50 dated baskets
    assert not mask[np.isnat(t)].any()  # undated baskets stay in training
    assert (t[mask] >= t[~mask & ~np.isnat(t)].max()).all()  # every held-out basket is at least as recent
    undated = np.full(50, np.datetime64("NaT"), dtype="datetime64[s]")
    mask = split_mask(undated, HoldoutPolicy(share=0.2, min_baskets=0))
    assert mask.tolist() == [False] * 40 + [True] * 10


def test_split_keeps_held_baskets_out_of_training(tiny_csv):
    tx = load_transactions(tiny_csv)
    train, held = split(tx, HoldoutPolicy())
    assert len(held.basket_ids) == HoldoutPolicy().size(len(tx.basket_ids))
    assert set(held.basket_ids).isdisjoint(train.basket_ids)
    assert len(train.basket_ids) + len(held.basket_ids) == len(tx.basket_ids)
    assert train.basket_time.max() <= held.cutoff
    # Each held-out basket's items are the file's.
    b = tx.basket_ids.index(held.basket_ids[0])
    assert sorted(held.items[0]) == sorted(tx.item_codes[i] for i in tx.pair_item[tx.pair_basket == b])


def test_leave_one_out_is_make_evaluate_s_protocol(tmp_path):
    # The same hiding as evaluation.temporal_split, drawn by the same seeded generator.
    baskets = [["13", "11", "12"], ["11"], ["14", "99", "12"], ["12", "11"]]
    known = {"11", "12", "13", "14"}
    cases = holdout.leave_one_out(baskets, known, seed=0)
    rng = np.random.default_rng(0)
    expected = []
    for position, codes in enumerate(baskets):
        present = sorted(set(codes) & known)
        if len(present) >= 2:
            h = int(rng.integers(len(present)))
            expected.append((position, [c for j, c in enumerate(present) if j != h], present[h]))
    assert cases == expected and [p for p, _, _ in cases] == [0, 2, 3]


def test_manifest_evaluation_and_stored_cases_through_the_served_path(trained_storage, tiny_csv, tmp_path):
    from dataclasses import replace

    from recommender.training.pipeline import TrainingParams, train

    version = registry.active_version(trained_storage)
    manifest = registry.read_manifest(trained_storage, version)
    ev = manifest["evaluation"]
    assert set(ev) == {
        "protocol",
        "cutoff",
        "holdout_baskets",
        "cases",
        "k",
        "model",
        "popularity",
        "seconds",
        "measured",
        "model_seconds",
    }
    assert ev["k"] == 10 and 0 < ev["cases"] <= ev["holdout_baskets"]
    assert 0 <= ev["popularity"]["hr"] < ev["model"]["hr"] <= 1 and ev["model"]["mrr"] <= ev["model"]["hr"]
    # The published model learned from everything, the held-out baskets included.
    assert manifest["period"]["last"] >= ev["cutoff"]
    assert manifest["counts"]["baskets"] == manifest["model"]["baskets"]
    stored = holdout.read_cases(trained_storage.read(registry.artifact_key(version, holdout.CASES)))
    assert len(stored["cases"]) == ev["cases"]
    ranks = np.array([c["rank"] for c in stored["cases"]])
    assert holdout.hit_metrics(ranks) == ev["model"]
    # Honest: the stored ranks are what a model that never saw the held-out baskets answers, through the served
    # path: the same file without them, trained with no holdout, answers exactly those ranks.
    _, held = holdout.split(load_transactions(tiny_csv), TrainingParams().holdout)
    assert len(held.basket_ids) == ev["holdout_baskets"]
    frame = pd.read_csv(tiny_csv, dtype=str, keep_default_na=False)
    frame[~frame.InvoiceNo.isin(set(held.basket_ids))].to_csv(tmp_path / "older.csv", index=False)
    storage = LocalStorage(tmp_path / "older")
    older = train(tmp_path / "older.csv", storage, replace(TrainingParams(), holdout=None), progress=lambda _m: None)
    model = load_model(storage, older.version)
    again = holdout.answer_ranks(model, [c["query"] for c in stored["cases"]], [c["hidden"] for c in stored["cases"]])
    assert again.tolist() == ranks.tolist()


def test_popularity_ranks_skip_the_query(trained_storage):
    model = load_model(trained_storage, registry.active_version(trained_storage))
    top = [model.items.codes[i] for i in model.items.most_popular()[:12]]
    ranks = holdout.popularity_ranks(model, [[top[0]], [top[1], top[5]], [top[2]]], [top[3], top[6], top[11]])
    assert ranks.tolist() == [3, 5, 0]  # the third is 11th once top[2] is left out: beyond 10
    assert holdout.hit_metrics(np.array([1, 2, 0, 0])) == {"hr": 0.5, "mrr": 0.375}


def test_no_holdout_on_a_tiny_file_and_when_disabled(tmp_path, tiny_csv):
    from dataclasses import replace

    from recommender.training.pipeline import TrainingParams, train

    path = tmp_path / "few.csv"
    path.write_text(
        "InvoiceNo,StockCode,Description,CustomerID\n"
        + "".join(f"{b},{10 + (b + j) % 5},d,\n" for b in range(20) for j in range(3))
    )
    lines = []
    result = train(path, LocalStorage(tmp_path / "a"), progress=lines.append)
    assert "evaluation" not in result.manifest and not any(line.startswith("holdout") for line in lines)
    result = train(
        tiny_csv, LocalStorage(tmp_path / "b"), replace(TrainingParams(), holdout=None), progress=lines.append
    )
    assert "evaluation" not in result.manifest and "calibration.json" not in result.manifest["artifacts"]
    assert result.manifest["params"]["holdout"] is None


def test_held_out_items_unknown_to_training_are_not_cases():
    # A basket holding fewer than two items the model knows cannot be a case.
    cases = holdout.leave_one_out([["NEW1", "NEW2", "11"], ["11", "12"]], {"11", "12"}, seed=0)
    assert [p for p, _, _ in cases] == [1]


def test_a_small_holdout_measures_the_published_model_itself(tmp_path, tiny_csv):
    # At or below HoldoutPolicy.separate_above, the model is trained once, without the held-out baskets, and
    # published: its figures are its own.
    from dataclasses import replace

    from recommender.training.pipeline import TrainingParams, train

    params = replace(TrainingParams(), holdout=replace(HoldoutPolicy(), separate_above=0.5))
    lines = []
    storage = LocalStorage(tmp_path)
    result = train(tiny_csv, storage, params, progress=lines.append)
    manifest, ev = result.manifest, result.manifest["evaluation"]
    assert ev["measured"].startswith("the published model") and "model_seconds" not in ev
    assert any(line.endswith("they are kept out of training (too few to matter)") for line in lines)
    assert not any("holdout model:" in line for line in lines)
    assert manifest["period"]["last"] < ev["cutoff"]
    assert manifest["model"]["baskets"] == manifest["counts"]["baskets"] - ev["holdout_baskets"]
    stored = holdout.read_cases(storage.read(registry.artifact_key(result.version, holdout.CASES)))
    model = load_model(storage, result.version)
    ranks = holdout.answer_ranks(model, [c["query"] for c in stored["cases"]], [c["hidden"] for c in stored["cases"]])
    assert ranks.tolist() == [c["rank"] for c in stored["cases"]]
    assert not HoldoutPolicy().separate(2000, 200_000) and HoldoutPolicy().separate(1027, 20_545)
