"""Calibrated confidence: the probability that a shopper holding the basket also buys a recommended item.

A model's `calibration.json` (fitted at training on held-out baskets, `training/calibration.py`) maps an item's
score and rank to that probability: an index z = a * score + b * log(rank) with a >= 0 >= b (a logistic fit), then
a non-decreasing piecewise-linear curve of z (isotonic regression). So confidence never falls when the score
rises, never rises with the rank at an equal score, and costs a few microseconds for a whole answer.

Popular items (fallback answers) get the rate at which the held-out shoppers bought the popular item at that rank.

Models without the artifact (trained before it existed, or without a holdout) get a fallback that needs no
fitting: the score clipped to [0, 1] (the item-item table is a ridge regression of an item's 0/1 column on the
basket's items, so its score is an uncalibrated linear estimate of that probability), and for popular items the
share of training baskets that held the item.
"""

from __future__ import annotations

import json

import numpy as np

FORMAT = 1


class Confidence:
    """(scores, ranks) of recommended items -> probabilities in [0, 1]; numpy only."""

    def __init__(self, spec: dict | None, popular_share_per_score: float = 0.0) -> None:
        self.spec = spec
        # Fallback for popular items: their score is popularity / top popularity, so this factor turns it into
        # the share of training baskets holding the item.
        self.popular_share_per_score = popular_share_per_score
        self.calibrated = spec is not None
        if spec is None:
            return
        self.w_score = float(spec["index"]["score"])
        self.w_log_rank = float(spec["index"]["log_rank"])
        self.x = np.asarray(spec["curve"]["x"], dtype=np.float64)
        self.y = np.asarray(spec["curve"]["y"], dtype=np.float64)
        rate = spec.get("popular", {}).get("rate") or []
        self.popular_rate = np.asarray(rate, dtype=np.float64) if rate else None

    @classmethod
    def from_json(cls, data: bytes | None, popular_share_per_score: float = 0.0) -> Confidence:
        """From the bytes of calibration.json, or the fallback when there are none."""
        spec = json.loads(data) if data else None
        if spec is not None and spec.get("format") != FORMAT:
            spec = None  # a format this code does not know: the fallback rather than a wrong reading
        return cls(spec, popular_share_per_score)

    def __call__(self, scores: np.ndarray, ranks: np.ndarray, popular: bool = False) -> np.ndarray:
        """Confidence of each item given its score and its rank in the answer (1 = first)."""
        scores = np.asarray(scores, dtype=np.float64)
        ranks = np.maximum(np.asarray(ranks, dtype=np.float64), 1.0)
        if popular:
            if self.calibrated and self.popular_rate is not None and len(self.popular_rate):
                at = np.minimum(ranks.astype(np.int64), len(self.popular_rate)) - 1
                return self.popular_rate[at]
            return np.clip(scores * self.popular_share_per_score, 0.0, 1.0)
        if not self.calibrated:
            return np.clip(scores, 0.0, 1.0)
        z = self.w_score * scores + self.w_log_rank * np.log(ranks)
        return np.interp(z, self.x, self.y)
