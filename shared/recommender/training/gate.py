"""The activation gate: a new model is compared with the active one on the new model's held-out baskets, and
refused when it is clearly worse (the usual cause is a wrong export: one day instead of a year, another file).

Both are scored through Model.recommend on the cases the new model stored (`holdout.json.gz`): the new model's
ranks were recorded at training (by the model trained without them), the active model answers them now. Only
baskets newer than everything the active model learned from count (its manifest's `period`), so neither side has
seen them. When too few are (a retraining of the same file, or of a part of it), the two models' own held-out
figures are compared instead: the same protocol on each one's newest baskets. "Clearly worse": HR@10 more than
`margin` (10% by default, setting MODEL_GATE_MARGIN) below the active model's, relative, on at least MIN_CASES
baskets; `--force` (make: FORCE=1) activates it anyway. Activation runs wherever training does, so this lives
with training, not in the serving layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recommender.core import registry
from recommender.core.errors import ModelRefused, PointerDamaged, RecommenderError
from recommender.core.storage import Storage
from recommender.serving.model import load_model
from recommender.training import holdout

MARGIN = 0.10
MIN_CASES = 30


@dataclass(frozen=True)
class Comparison:
    """Both models' figures on the same held-out baskets."""

    candidate: str
    active: str
    cases: int
    first: str | None  # date of the earliest basket compared
    last: str | None
    candidate_figures: dict  # {"hr", "mrr"}
    active_figures: dict
    own_cases: int | None = None  # set when each model's figures are on its own held-out baskets: the active's

    def worse(self, margin: float) -> bool:
        """Whether the candidate's HR@10 is more than margin (relative) below the active model's."""
        cases = min(self.cases, self.own_cases if self.own_cases is not None else self.cases)
        return cases >= MIN_CASES and self.candidate_figures["hr"] < (1 - margin) * self.active_figures["hr"]

    def describe(self) -> str:
        """Both figures, in one line."""
        c, a = self.candidate_figures, self.active_figures
        span = f" from {self.first} to {self.last}" if self.first else ""
        where = (
            f"each on its own held-out baskets ({self.cases:,} and {self.own_cases:,}; the active model learned "
            f"from the new one's)"
            if self.own_cases is not None
            else f"on {self.cases:,} held-out baskets{span}"
        )
        return (
            f"HR@10 {c['hr']:.3f} for the new model {self.candidate} against {a['hr']:.3f} for the active "
            f"{self.active} (MRR@10 {c['mrr']:.3f} against {a['mrr']:.3f}), {where}"
        )


def compare(storage: Storage, candidate: str, active: str) -> tuple[Comparison | None, str]:
    """Score the active model on the candidate's held-out baskets; (None, why) when that cannot be done honestly."""
    manifest = registry.read_manifest(storage, candidate)
    if holdout.CASES not in manifest.get("artifacts", {}):
        return None, f"the new model {candidate} has no held-out baskets to compare on"
    active_manifest = registry.read_manifest(storage, active)
    if "period" not in active_manifest:
        return None, (
            f"the active model {active} was trained before held-out evaluation existed: it may have "
            f"learned from the new model's held-out baskets"
        )
    stored = holdout.read_cases(registry.read_verified(storage, candidate, holdout.CASES, registry.MODELS))
    cases = stored["cases"]
    period = active_manifest["period"]
    if period is not None:
        # Cases the active model may have learned from would flatter it: only newer baskets count.
        cases = [c for c in cases if c["time"] is not None and c["time"] > period["last"]]
    elif "evaluation" not in active_manifest:
        return None, f"the active model {active} learned from an undated file without a holdout"
    if len(cases) < MIN_CASES:
        if "evaluation" in active_manifest and "evaluation" in manifest:
            return _own_holdouts(candidate, active, manifest["evaluation"], active_manifest["evaluation"]), ""
        return None, (
            f"only {len(cases)} of the new model's held-out baskets are newer than what the active model "
            f"{active} learned from (at least {MIN_CASES} are needed)"
        )
    try:
        model = load_model(storage, active)
    except RecommenderError as err:
        return None, f"the active model cannot be loaded ({err.message})"
    ranks = holdout.answer_ranks(model, [c["query"] for c in cases], [c["hidden"] for c in cases], stored["k"])
    times = sorted(c["time"] for c in cases if c["time"])
    return Comparison(
        candidate,
        active,
        len(cases),
        times[0][:10] if times else None,
        times[-1][:10] if times else None,
        holdout.hit_metrics(np.array([c["rank"] for c in cases]), stored["k"]),
        holdout.hit_metrics(ranks, stored["k"]),
    ), ""


def _own_holdouts(candidate: str, active: str, new: dict, old: dict) -> Comparison:
    """The figures both models got at training, each on its own newest baskets."""
    return Comparison(
        candidate,
        active,
        new["cases"],
        None,
        None,
        {"hr": new["model"]["hr"], "mrr": new["model"]["mrr"]},
        {"hr": old["model"]["hr"], "mrr": old["model"]["mrr"]},
        own_cases=old["cases"],
    )


def check(
    storage: Storage,
    candidate: str,
    force: bool = False,
    margin: float = MARGIN,
    progress: Callable[[str], None] = print,
) -> Comparison | None:
    """Compare the candidate with the active model before it replaces it; ModelRefused when it is clearly worse
    (unless force). Returns the comparison (None when there was nothing to compare, with the reason reported)."""
    try:
        pointer = registry.active(storage)
    except PointerDamaged as err:
        progress(f"not compared with the active model: {err.message}")
        return None
    if pointer is None or pointer.version == candidate:
        return None
    comparison, why = compare(storage, candidate, pointer.version)
    if comparison is None:
        progress(f"not compared with the active model: {why}")
        return None
    if not comparison.worse(margin):
        progress(f"compared with the active model: {comparison.describe()}")
        return comparison
    text = f"the new model is clearly worse than the active one: {comparison.describe()}; more than {margin:.0%} below"
    if force:
        progress(f"{text}; activated anyway (forced)")
        return comparison
    raise ModelRefused(f"refused: {text}")
