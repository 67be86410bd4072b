"""Fitting calibrated confidence on held-out baskets, and measuring calibration (reliability bins, ECE).

Each held-out basket is split at random: part of it is the query, the rest is what the shopper bought. Every
recommended item is one observation (score, rank, bought or not). A logistic regression on score and log(rank)
(Platt scaling of both) gives the direction that orders them; isotonic regression (pool adjacent violators) of
"bought" on that index gives the probability, without assuming the logistic curve's shape. The result is the
`calibration.json` artifact read by `serving/confidence.py`. Plain numpy, so any trainer can call it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from recommender.serving.confidence import FORMAT

# Fewest observations per point of the curve: the ends of an isotonic fit on single observations would say 0 or 1.
MIN_PER_KNOT = 30
MAX_KNOTS = 200


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


def logistic(features: np.ndarray, labels: np.ndarray, iterations: int = 50, ridge: float = 1e-6) -> np.ndarray:
    """Coefficients (intercept first) of a logistic regression by Newton's method."""
    x = np.column_stack([np.ones(len(labels)), features])
    beta = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
        gradient = x.T @ (labels - p) - ridge * beta
        hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        beta += step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def index_weights(obs: Observations) -> tuple[float, float]:
    """Weights (score, log rank) of the index, signs forced: a feature whose fitted sign would make confidence
    fall with the score or rise with the rank is dropped and the other refitted."""
    labels = obs.bought.astype(np.float64)
    columns = {"score": obs.scores.astype(np.float64), "log_rank": np.log(np.maximum(obs.ranks, 1))}
    wanted_sign = {"score": 1.0, "log_rank": -1.0}
    names = [n for n in columns if np.ptp(columns[n]) > 0]
    while names:
        beta = logistic(np.column_stack([columns[n] for n in names]), labels)[1:]
        wrong = [n for n, b in zip(names, beta) if b * wanted_sign[n] < 0]
        if not wrong:
            fitted = dict(zip(names, beta))
            return float(fitted.get("score", 0.0)), float(fitted.get("log_rank", 0.0))
        names = [n for n in names if n not in wrong]
    return 0.0, 0.0


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


def popular_rates(ranks: np.ndarray, bought: np.ndarray, depth: int) -> list[float]:
    """How often the shopper bought the popular item shown at each rank 1..depth, made non-increasing in rank."""
    ranks = np.asarray(ranks, dtype=np.int64)
    shown = np.bincount(ranks, minlength=depth + 1)[1 : depth + 1]
    hits = np.bincount(ranks, weights=np.asarray(bought, dtype=np.float64), minlength=depth + 1)[1 : depth + 1]
    if not shown.any():
        return []
    rate = np.divide(hits, shown, out=np.zeros(depth), where=shown > 0)
    keep = shown > 0
    fitted = pav(rate[keep][::-1], shown[keep][::-1])[::-1]  # non-increasing in rank: non-decreasing reversed
    out = np.interp(np.arange(depth), np.flatnonzero(keep), fitted)
    return [round(float(v), 6) for v in out]


def fit(model_obs: Observations, popular_obs: Observations, cases: int, depth: int) -> dict:
    """The calibration.json content fitted on held-out observations of the model's and of popular answers."""
    w_score, w_rank = index_weights(model_obs) if len(model_obs) else (0.0, 0.0)
    if len(model_obs):
        z = w_score * model_obs.scores + w_rank * np.log(np.maximum(model_obs.ranks, 1))
        x, y = isotonic_curve(z, model_obs.bought)
    else:
        x, y = [0.0], [0.0]
    return {
        "format": FORMAT,
        "method": "isotonic regression of 'bought' on a logistic index of score and log(rank)",
        "fitted_on": {
            "cases": cases,
            "observations": len(model_obs),
            "popular_observations": len(popular_obs),
            "depth": depth,
            "base_rate": round(float(model_obs.bought.mean()), 6) if len(model_obs) else None,
        },
        "index": {"score": round(w_score, 6), "log_rank": round(w_rank, 6)},
        "curve": {"x": x, "y": y},
        "popular": {"rate": popular_rates(popular_obs.ranks, popular_obs.bought, depth) if len(popular_obs) else []},
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
