"""Calibrated confidence: the probability that a shopper holding the basket also buys a recommended item.

A model's `calibration.json` (fitted at training on held-out baskets, `training/calibration.py`) maps an item's
score to that probability: a non-decreasing piecewise-linear curve of the score (isotonic regression). The score
alone: the same item for the same basket has the same confidence at whatever rank it is shown, so a filter or a
rule that moves it up does not change it (an item's rank is its score's order among the items still shown; that
the first places are bought more often is what their higher scores say). Confidence never falls when the score
rises and costs a few microseconds for a whole answer.

Popular items (fallback answers) get the same from their own curve over their popularity score (the item's
popularity over the most popular item's), fitted on how often the held-out shoppers bought popular items.

Answers the learned re-ranker leaves in the first stage's order (baskets of more items than it re-ranks: wholesale
orders) read their own curve too: their scores sit below every re-ranked item's, yet their items are bought at the
first stage's own rates, not at those of the re-ranked answers' weakest items. It is fitted on what the first stage
alone answers to the held-out queries (its scores squashed as those answers carry them); without it (files written
before it, too few observations), the main curve.

Calibration files of format 1 (models trained before) map score and rank, through an index
z = a * score + b * log(rank) with a >= 0 >= b and one rate per rank for popular items: still read, rank and all.

Models without the artifact (trained before it existed, or without a holdout) get a fallback that needs no
fitting: the score clipped to [0, 1] (the item-item table is a ridge regression of an item's 0/1 column on the
basket's items, so its score is an uncalibrated linear estimate of that probability), and for popular items the
share of training baskets that held the item.
"""

from __future__ import annotations

import json

import numpy as np

FORMAT = 2  # the score alone; 1: score and rank (still read)
FORMATS = (1, 2)


class Confidence:
    """(scores, ranks) of recommended items -> probabilities in [0, 1] (the ranks matter to format 1 files only);
    numpy only."""

    def __init__(self, spec: dict | None, popular_share_per_score: float = 0.0) -> None:
        self.spec = spec
        # Fallback for popular items: their score is popularity / top popularity, so this factor turns it into
        # the share of training baskets holding the item.
        self.popular_share_per_score = popular_share_per_score
        self.calibrated = spec is not None
        if spec is None:
            return
        # Format 2 is format 1 with the score's weight 1 and the rank's 0, and a curve for popular items.
        index = spec.get("index") or {"score": 1.0, "log_rank": 0.0}
        self.w_score = float(index["score"])
        self.w_log_rank = float(index["log_rank"])
        self.x = np.asarray(spec["curve"]["x"], dtype=np.float64)
        self.y = np.asarray(spec["curve"]["y"], dtype=np.float64)
        popular = spec.get("popular", {})
        rate = popular.get("rate") or []
        self.popular_rate = np.asarray(rate, dtype=np.float64) if rate else None
        curve = popular.get("curve") or {}
        self.popular_x = np.asarray(curve.get("x") or [], dtype=np.float64)
        self.popular_y = np.asarray(curve.get("y") or [], dtype=np.float64)
        first = (spec.get("first_stage") or {}).get("curve") or {}
        if first.get("x"):
            self.first_x = np.asarray(first["x"], dtype=np.float64)
            self.first_y = np.asarray(first["y"], dtype=np.float64)
        else:
            self.first_x, self.first_y = self.x, self.y

    @property
    def by_score(self) -> bool:
        """Whether a non-popular item's confidence depends on its score alone (scores()): format 2 files and the
        fallback."""
        return not self.calibrated or (self.w_score == 1.0 and self.w_log_rank == 0.0)

    def scores(self, scores: np.ndarray, first_stage: bool = False) -> np.ndarray:
        """Confidence of items (not popular ones) from their float64 scores, when by_score: what __call__ gives at
        any rank, with one numpy call (1.0 * score + 0.0 and the score read the same point of the curve);
        first_stage: an answer the re-ranker left in the first stage's order."""
        if not self.calibrated:
            return np.clip(scores, 0.0, 1.0)
        if first_stage:
            return np.interp(scores, self.first_x, self.first_y)
        return np.interp(scores, self.x, self.y)

    @classmethod
    def from_json(cls, data: bytes | None, popular_share_per_score: float = 0.0) -> Confidence:
        """From the bytes of calibration.json, or the fallback when there are none."""
        spec = json.loads(data) if data else None
        if spec is not None and spec.get("format") not in FORMATS:
            spec = None  # a format this code does not know: the fallback rather than a wrong reading
        return cls(spec, popular_share_per_score)

    def __call__(
        self, scores: np.ndarray, ranks: np.ndarray, popular: bool = False, first_stage: bool = False
    ) -> np.ndarray:
        """Confidence of each item given its score (and, for a format 1 file only, its rank in the answer, 1 =
        first; popular: the item's popularity over the most popular item's; first_stage: an answer the re-ranker
        left in the first stage's order)."""
        scores = np.asarray(scores, dtype=np.float64)
        ranks = np.maximum(np.asarray(ranks, dtype=np.float64), 1.0)
        if popular:
            if self.calibrated and len(self.popular_x):
                return np.interp(scores, self.popular_x, self.popular_y)
            if self.calibrated and self.popular_rate is not None and len(self.popular_rate):
                at = np.minimum(ranks.astype(np.int64), len(self.popular_rate)) - 1
                return self.popular_rate[at]
            return np.clip(scores * self.popular_share_per_score, 0.0, 1.0)
        if not self.calibrated:
            return np.clip(scores, 0.0, 1.0)
        z = self.w_score * scores + (self.w_log_rank * np.log(ranks) if self.w_log_rank else 0.0)
        if first_stage:
            return np.interp(z, self.first_x, self.first_y)
        return np.interp(z, self.x, self.y)
