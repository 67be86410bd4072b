"""Fitting calibrated confidence on held-out baskets, and measuring calibration (reliability bins, ECE).

Each held-out basket is split at random: part of it is the query, the rest is what the shopper bought. Every
recommended item is one observation (score, rank, bought or not). Isotonic regression (pool adjacent violators)
of "bought" on the score alone gives the probability, without assuming a curve's shape; the same on the
popularity score for popular items, and, for the answers the learned re-ranker leaves in the first stage's order
(baskets of hundreds of items: their scores sit below every re-ranked one's), on the first stage's own answers to
the same queries. Not on the rank: an item moved up a rank by a filter or a rule would then change its confidence,
for the same item and basket (the rank's own information is mostly in the score it comes from; the ECE `make
evaluate` reports measures what is left). The result is the `calibration.json` artifact read by
`serving/confidence.py`. Plain numpy, so any trainer can call it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from recommender.serving.confidence import FORMAT

# Fewest observations per point of the curve: the ends of an isotonic fit on single observations would say 0 or 1.
MIN_PER_KNOT = 30
MAX_KNOTS = 200
# Fewest observations of the first stage's answers for a curve of their own (a few points of it).
MIN_FIRST_STAGE = 4 * MIN_PER_KNOT


@dataclass
class Observations:
    """Recommended items of held-out queries: score, rank (1 = first) and whether the shopper bought it."""

    scores: np.ndarray
    ranks: np.ndarray
    bought: np.ndarray

    def __len__(self) -> int:
        return len(self.bought)


def pav(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to values in weighted least squares (pool adjacent violators)."""
    means: list[float] = []
    mass: list[float] = []
    sizes: list[int] = []
    for v, w in zip(np.asarray(values, dtype=np.float64).tolist(), np.asarray(weights, dtype=np.float64).tolist()):
        size = 1
        while means and means[-1] > v:
            m, mw, ms = means.pop(), mass.pop(), sizes.pop()
            v = (m * mw + v * w) / (mw + w)
            w += mw
            size += ms
        means.append(v)
        mass.append(w)
        sizes.append(size)
    return np.repeat(np.asarray(means), sizes)


def isotonic_curve(
    z: np.ndarray, bought: np.ndarray, min_per_knot: int = MIN_PER_KNOT, max_knots: int = MAX_KNOTS
) -> tuple[list[float], list[float]]:
    """Knots (x, y) of the non-decreasing curve of P(bought) over z: observations sorted by z, pooled into runs of
    at least min_per_knot (never splitting equal z), then pool adjacent violators over the runs."""
    order = np.argsort(z, kind="stable")
    z, bought = z[order], bought[order].astype(np.float64)
    per = max(min_per_knot, -(-len(z) // max_knots))
    # Cut after every per-th observation, moved forward past ties so equal z stay in one run.
    cuts = []
    i = per
    while i < len(z):
        i = int(np.searchsorted(z, z[i - 1], side="right"))
        if len(z) - i < per:
            break
        cuts.append(i)
        i += per
    bounds = np.array([0, *cuts, len(z)])
    counts = np.diff(bounds)
    x = np.add.reduceat(z, bounds[:-1]) / counts
    y = pav(np.add.reduceat(bought, bounds[:-1]) / counts, counts)
    # Inside a flat run of the curve only its two ends matter to a linear interpolation.
    keep = np.ones(len(y), dtype=bool)
    keep[1:-1] = (y[1:-1] != y[:-2]) | (y[1:-1] != y[2:])
    return [round(float(v), 6) for v in x[keep]], [round(float(v), 6) for v in y[keep]]


def fit(
    model_obs: Observations,
    popular_obs: Observations,
    cases: int,
    depth: int,
    first_stage_obs: Observations | None = None,
) -> dict:
    """The calibration.json content fitted on held-out observations of the model's answers (their scores), of
    popular answers (their popularity scores) and of the first stage's answers alone, for answers the re-ranker
    leaves in its order (their own curve when there are at least MIN_FIRST_STAGE: serving reads the main one
    otherwise)."""
    x, y = isotonic_curve(model_obs.scores, model_obs.bought) if len(model_obs) else ([0.0], [0.0])
    popular_x, popular_y = isotonic_curve(popular_obs.scores, popular_obs.bought) if len(popular_obs) else ([], [])
    first_n = len(first_stage_obs) if first_stage_obs is not None else 0
    first_x, first_y = (
        isotonic_curve(first_stage_obs.scores, first_stage_obs.bought) if first_n >= MIN_FIRST_STAGE else ([], [])
    )
    return {
        "format": FORMAT,
        "method": "isotonic regression of 'bought' on the score alone (popular items: on their popularity score)",
        "fitted_on": {
            "cases": cases,
            "observations": len(model_obs),
            "popular_observations": len(popular_obs),
            "depth": depth,
            "base_rate": round(float(model_obs.bought.mean()), 6) if len(model_obs) else None,
        },
        "curve": {"x": x, "y": y},
        "popular": {"curve": {"x": popular_x, "y": popular_y}},
        "first_stage": {"observations": first_n, "curve": {"x": first_x, "y": first_y}},
    }


def to_json(spec: dict) -> bytes:
    """The artifact's bytes (stable across runs: same input, same bytes)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()


def reliability(predicted: np.ndarray, observed: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width bins of predicted probability: count, mean predicted and observed rate of each non-empty bin."""
    predicted = np.asarray(predicted, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64)
    which = np.minimum((predicted * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": int(mask.sum()),
                    "predicted": float(predicted[mask].mean()),
                    "observed": float(observed[mask].mean()),
                }
            )
    return out


def expected_calibration_error(predicted: np.ndarray, observed: np.ndarray, bins: int = 10) -> float:
    """ECE: the count-weighted mean gap between predicted and observed rates over equal-width bins."""
    total = len(predicted)
    if not total:
        return float("nan")
    return float(
        sum(b["count"] * abs(b["predicted"] - b["observed"]) for b in reliability(predicted, observed, bins)) / total
    )
