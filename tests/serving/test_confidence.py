"""Model.confidence: calibrated from the version's calibration.json, the fallback without it, and its contract."""

import json

import numpy as np
import pytest

from recommender.core import registry
from recommender.serving.confidence import Confidence
from recommender.serving.model import load_model


@pytest.fixture
def model(trained_storage):
    return load_model(trained_storage, registry.active_version(trained_storage))


def test_contract_on_a_trained_model(model):
    assert model._confidence.calibrated
    answer = model.recommend([model.items.codes[0], model.items.codes[3]], 10)
    scores = np.array([s.score for s in answer.items])
    ranks = np.arange(1, len(scores) + 1)
    conf = model.confidence(scores, ranks)
    assert conf.shape == scores.shape and np.all((conf >= 0) & (conf <= 1))
    assert np.all(np.diff(conf) <= 1e-12)  # answers are sorted by score: confidence follows
    grid = np.linspace(-2, 5, 50)
    assert np.all(np.diff(model.confidence(grid, np.ones(50))) >= 0)  # never falls with the score
    for score in (0.0, 0.2, 1.0):  # and is the same at every rank
        assert len(set(model.confidence(np.full(100, score), np.arange(1, 101)).tolist())) == 1
    popular = model.confidence(np.linspace(1, 0, 20), np.arange(1, 21), popular=True)
    assert np.all((popular >= 0) & (popular <= 1)) and np.all(np.diff(popular) <= 0)


def test_calibrated_on_what_held_out_shoppers_bought(tiny_csv, tmp_path):
    # The training's calibration queries, rebuilt from the stored held-out baskets: on them the mean confidence is
    # the rate at which the shoppers bought what was recommended. Checked on a model that never saw those baskets
    # (the published model is the measured one when the policy says so; by default a second model is measured).
    from dataclasses import replace

    from recommender.core.storage import LocalStorage
    from recommender.training import calibration, holdout
    from recommender.training.pipeline import TrainingParams, train

    params = replace(TrainingParams(), holdout=replace(holdout.HoldoutPolicy(), separate_above=1.0))
    storage = LocalStorage(tmp_path)
    model = load_model(storage, train(tiny_csv, storage, params, progress=lambda _m: None).version)
    stored = holdout.read_cases(storage.read(registry.artifact_key(model.version, holdout.CASES)))
    baskets = [c["query"] + [c["hidden"]] for c in stored["cases"]]
    splits = holdout.random_splits(baskets, model.items.index, stored["seed"] + 1)[: holdout.CALIBRATION_QUERIES]
    obs, _, _ = holdout.observe(model, splits)
    predicted = model.confidence(obs.scores, obs.ranks)
    assert len(obs) > 100 and 0 < obs.bought.mean() < 1
    assert predicted.mean() == pytest.approx(obs.bought.mean(), abs=0.02)
    assert calibration.expected_calibration_error(predicted, obs.bought) < 0.05


def test_fallback_without_the_artifact(model):
    plain = Confidence.from_json(None, popular_share_per_score=0.25)
    assert not plain.calibrated
    assert plain(np.array([-0.3, 0.2, 0.7, 1.8]), np.array([1, 2, 3, 4])).tolist() == [0.0, 0.2, 0.7, 1.0]
    assert plain(np.array([1.0, 0.5]), np.array([1, 2]), popular=True).tolist() == [0.25, 0.125]
    # A format this code does not know is read as no artifact at all.
    assert not Confidence.from_json(json.dumps({"format": 99}).encode()).calibrated


def test_fallback_model_trained_before_calibration_existed(trained_storage, model):
    # Drop the artifact from a copy of the manifest: what a version trained before this feature looks like.
    manifest = dict(
        model.manifest, artifacts={k: v for k, v in model.manifest["artifacts"].items() if k != "calibration.json"}
    )
    trained_storage.write(registry.artifact_key(model.version, "manifest.json"), json.dumps(manifest).encode())
    old = load_model(trained_storage, model.version)
    assert not old._confidence.calibrated
    assert old.confidence(np.array([0.4, 2.0]), np.array([1, 2])).tolist() == [0.4, 1.0]
    top = old.items.most_popular()[0]
    share = old.items.popularity[top] / old.manifest["model"]["baskets"]
    assert old.confidence(np.array([1.0]), np.array([1]), popular=True)[0] == pytest.approx(share)


def test_a_filter_moving_an_item_up_leaves_its_confidence(model):
    """The same item for the same basket shows the same confidence whether or not a filter moved it up a rank:
    confidence is calibrated on the score alone (model picks) and on popularity alone (popular picks)."""
    from recommender.serving.merchandising import Options

    for basket in ([model.items.codes[0], model.items.codes[3]], []):  # model picks, then popular ones
        plain = model.recommend(basket, 10, Options(explain=True)).items
        first = plain[0].item.stock_code
        filtered = model.recommend(basket, 10, Options(exclude=(first,), explain=True)).items
        before = {p.item.stock_code: p.confidence for p in plain[1:]}
        after = {p.item.stock_code: p.confidence for p in filtered}
        moved = [code for code in before if code in after]
        assert len(moved) >= 5 and [p.item.stock_code for p in filtered[: len(moved)]] == moved  # each one up a rank
        assert [after[code] for code in moved] == [before[code] for code in moved], basket
        assert len(set(before.values())) > 1  # not one figure for all
