"""Calibration fitting: pool adjacent violators, the fitted curves (score alone), reliability and ECE."""

import itertools
import json

import numpy as np
import pytest

from recommender.serving.confidence import Confidence
from recommender.training import calibration
from recommender.training.calibration import Observations, pav


def brute_force_isotonic(values, weights):
    """The best non-decreasing fit by trying every partition into consecutive pooled blocks (small inputs only)."""
    n = len(values)
    best, best_cost = None, np.inf
    for cuts in itertools.chain.from_iterable(itertools.combinations(range(1, n), k) for k in range(n)):
        bounds = [0, *cuts, n]
        fit = np.concatenate(
            [np.full(b - a, np.average(values[a:b], weights=weights[a:b])) for a, b in zip(bounds, bounds[1:])]
        )
        if np.all(np.diff(fit) >= -1e-12):
            cost = float(np.sum(weights * (values - fit) ** 2))
            if cost < best_cost:
                best, best_cost = fit, cost
    return best


@pytest.mark.parametrize("seed", range(5))
def test_pav_is_the_best_monotone_fit(seed):
    rng = np.random.default_rng(seed)
    values, weights = rng.random(7), rng.integers(1, 5, 7).astype(float)
    fit = pav(values, weights)
    assert np.all(np.diff(fit) >= 0)
    assert fit == pytest.approx(brute_force_isotonic(values, weights))
    assert np.average(fit, weights=weights) == pytest.approx(np.average(values, weights=weights))


def synthetic_observations(n=30_000, seed=0):
    """Answers whose true chance of purchase is known: rises with the score, falls with the rank."""
    rng = np.random.default_rng(seed)
    scores = rng.gamma(2.0, 0.2, n)
    ranks = rng.integers(1, 21, n)
    truth = np.clip(0.6 * scores / (1 + scores) + 0.1 / ranks, 0, 1)
    return Observations(scores, ranks, rng.random(n) < truth), truth


def test_fitted_confidence_matches_the_truth_and_is_monotone():
    obs, truth = synthetic_observations()
    popular = Observations(np.array([1.0] * 40 + [0.5] * 40), np.ones(80, int), np.array([1, 0] * 20 + [0] * 40, bool))
    spec = calibration.fit(obs, popular, 100, 20)
    assert spec["format"] == 2 and "index" not in spec
    confidence = Confidence.from_json(calibration.to_json(spec))
    predicted = confidence(obs.scores, obs.ranks)
    # The score alone: what the rank adds to the truth is averaged out, and the fit stays calibrated.
    assert np.abs(predicted - truth).mean() < 0.06
    assert calibration.expected_calibration_error(predicted, obs.bought) < 0.02
    grid_scores = np.linspace(-1, 5, 61)
    assert np.all(np.diff(confidence(grid_scores, np.ones(61))) >= 0)  # never falls with the score
    for score in (-0.5, 0.0, 0.3, 1.0, 4.0):  # the same at every rank
        assert len(set(confidence(np.full(100, score), np.arange(1, 101)).tolist())) == 1
    assert confidence(np.array([-100.0, 100.0]), np.array([1, 1])).tolist() == [
        spec["curve"]["y"][0],
        spec["curve"]["y"][-1],
    ]
    # Popular items by their popularity score, whatever their rank.
    assert confidence(np.array([1.0, 1.0, 0.5]), np.array([1, 7, 1]), popular=True).tolist() == [0.5, 0.5, 0.0]


def test_a_format_1_file_is_still_read_with_its_ranks():
    legacy = {
        "format": 1,
        "index": {"score": 1.0, "log_rank": -0.5},
        "curve": {"x": [-2.0, 1.0], "y": [0.0, 0.3]},
        "popular": {"rate": [0.2, 0.1]},
    }
    confidence = Confidence.from_json(json.dumps(legacy).encode())
    assert confidence.calibrated
    first, later = confidence(np.array([1.0, 1.0]), np.array([1, 4])).tolist()
    assert first == pytest.approx(0.3) and later < first
    assert confidence(np.array([1.0, 1.0]), np.array([1, 2]), popular=True).tolist() == [0.2, 0.1]


def test_curve_knots_need_enough_observations():
    z = np.arange(100.0)
    x, y = calibration.isotonic_curve(z, z >= 99, min_per_knot=30)
    assert max(y) < 0.1  # the lone top purchase is pooled with 29+ others, not a confidence of 1
    assert np.all(np.diff(x) > 0)


def test_reliability_and_ece_by_hand():
    predicted = np.array([0.05, 0.05, 0.15, 0.95])
    observed = np.array([0, 1, 0, 1])
    bins = calibration.reliability(predicted, observed)
    assert [(b["low"], b["count"], b["observed"]) for b in bins] == [(0.0, 2, 0.5), (0.1, 1, 0.0), (0.9, 1, 1.0)]
    assert calibration.expected_calibration_error(predicted, observed) == pytest.approx((2 * 0.45 + 0.15 + 0.05) / 4)


def test_answers_left_in_the_first_stages_order_get_their_own_curve():
    """Big baskets' answers (the re-ranker leaves them in the first stage's order) score below every re-ranked
    item yet are bought at the first stage's rates: the first stage's own answers give them a curve of their own;
    with too few observations, none, and serving reads the main curve."""
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0.5, 1.0, 2000), rng.uniform(0.0, 0.5, 300)])
    bought = np.concatenate([rng.random(2000) < scores[:2000] - 0.5, rng.random(300) < 0.4])
    model_obs = calibration.Observations(scores[:2000], np.ones(2000), bought[:2000])
    big = calibration.Observations(scores[2000:], np.ones(300), bought[2000:])
    empty = calibration.Observations(np.empty(0), np.empty(0), np.empty(0, dtype=bool))
    spec = calibration.fit(model_obs, empty, 100, 20, big)
    confidence = Confidence.from_json(calibration.to_json(spec))
    low = np.full(5, 0.3)
    assert confidence.scores(low, first_stage=True).mean() == pytest.approx(0.4, abs=0.08)
    assert confidence.scores(low).max() < 0.1  # the main curve: below every re-ranked item
    assert confidence(low, np.ones(5), first_stage=True).tolist() == confidence.scores(low, True).tolist()
    few = calibration.Observations(big.scores[:50], big.ranks[:50], big.bought[:50])
    sparse = Confidence.from_json(calibration.to_json(calibration.fit(model_obs, empty, 100, 20, few)))
    assert sparse.scores(low, first_stage=True).tolist() == sparse.scores(low).tolist()
