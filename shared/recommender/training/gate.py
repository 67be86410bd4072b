"""The activation gate: a new model is compared with the active one on the new model's held-out baskets, and
refused when it is clearly worse (the usual cause is a wrong export: one day instead of a year, another file), or
when nothing can show that it is not.

Both are scored through Model.recommend on the cases the new model stored (`holdout.json.gz`): the new model's
ranks were recorded at training (by the model trained without them), the active model answers them now. Only
baskets the active model cannot have seen count: dated outside the purchases it learned from (its manifest's
`period`), and, when most of them hold a product it does not know (another shop's file, the demo's data), those
too. When fewer than MIN_CASES are (a retraining of the same file, or of a part of it) and both models
were measured at training, the two models' own held-out figures are compared instead: the same protocol on each
one's newest baskets. "Clearly worse": HR@10 more than `margin` (10% by default, setting MODEL_GATE_MARGIN) below
the active model's, relative. A model that cannot be measured (too few baskets to hold any out, HOLDOUT=0, fewer
than MIN_CASES scored) or cannot be compared honestly is refused too: it may not replace a working model on
trust. `--force` (make: FORCE=1) activates it anyway. Only an active model that cannot be read is replaced without
a comparison: the replacement is its repair. Activation runs wherever training does, so this lives with
training, not in the serving layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recommender.core import registry
from recommender.core.errors import ModelRefused, PointerDamaged, RecommenderError
from recommender.core.items import ITEMS_FILE, Items
from recommender.core.storage import Storage
from recommender.serving.model import load_model
from recommender.training import holdout

MARGIN = 0.10
MIN_CASES = 30


@dataclass(frozen=True)
class Comparison:
    """Both models' figures on the same held-out baskets, or each on its own (own_cases set, with why)."""

    candidate: str
    active: str
    cases: int
    first: str | None  # date of the earliest basket compared
    last: str | None
    candidate_figures: dict  # {"hr", "mrr"}
    active_figures: dict
    own_cases: int | None = None  # set when each model's figures are on its own held-out baskets: the active's
    why_own: str = ""  # why the active model could not be scored on the new one's baskets
    basis: str = ""  # which baskets were compared, when not only by their dates
    label: str = "the new model"

    def worse(self, margin: float) -> bool:
        """Whether the candidate's HR@10 is more than margin (relative) below the active model's."""
        cases = min(self.cases, self.own_cases if self.own_cases is not None else self.cases)
        return cases >= MIN_CASES and self.candidate_figures["hr"] < (1 - margin) * self.active_figures["hr"]

    def describe(self) -> str:
        """Both figures, in one line."""
        c, a = self.candidate_figures, self.active_figures
        span = f" from {self.first} to {self.last}" if self.first else ""
        where = (
            f"each on its own held-out baskets ({self.cases:,} and {self.own_cases:,}{self.why_own})"
            if self.own_cases is not None
            else f"on {self.cases:,} held-out baskets{span}{self.basis}"
        )
        return (
            f"HR@10 {c['hr']:.3f} for {self.label} {self.candidate} against {a['hr']:.3f} for the active "
            f"{self.active} (MRR@10 {c['mrr']:.3f} against {a['mrr']:.3f}), {where}"
        )


@dataclass(frozen=True)
class NoComparison:
    """Why the two models could not be compared; blocks: whether the candidate may then not replace the active one
    without force (False only when the active model cannot be read: replacing it is the repair)."""

    why: str
    blocks: bool = True


def measured(manifest: dict) -> bool:
    """Whether a version has held-out figures on enough baskets to stand for it."""
    evaluation = manifest.get("evaluation") or {}
    figures = evaluation.get("model")
    return (
        isinstance(evaluation.get("cases"), int)
        and evaluation["cases"] >= MIN_CASES
        and isinstance(figures, dict)
        and all(isinstance(figures.get(name), int | float) for name in ("hr", "mrr"))
    )


def _unmeasured_why(manifest: dict) -> str:
    """Why a version has no usable held-out figures, from its manifest."""
    evaluation = manifest.get("evaluation")
    if measured(manifest):
        return f"its held-out baskets were not kept ({holdout.CASES})"
    if evaluation:
        cases = evaluation.get("cases") if isinstance(evaluation.get("cases"), int) else 0
        return f"only {cases:,} held-out basket{'s' * (cases != 1)} could be scored, at least {MIN_CASES} are needed"
    params = manifest.get("params") or {}
    if "holdout" in params and params["holdout"] is None:
        return "it was trained with HOLDOUT=0, on every basket"
    baskets = (manifest.get("counts") or {}).get("baskets")
    try:
        too_few = isinstance(baskets, int) and holdout.HoldoutPolicy(**params["holdout"]).size(baskets) == 0
    except (KeyError, TypeError):
        too_few = False
    if too_few:
        return f"its {baskets:,} baskets are too few to hold any out"
    return "none of its held-out baskets could be scored"


def _dated(period: dict) -> bool:
    return all(isinstance(period.get(end), str) for end in ("first", "last"))


def _figures(manifest: dict) -> str:
    evaluation = manifest["evaluation"]
    return f"HR@10 {evaluation['model']['hr']:.3f} on {evaluation['cases']:,} held-out baskets"


def compare(storage: Storage, candidate: str, active: str, label: str = "the new model") -> Comparison | NoComparison:
    """Score the active model on the candidate's held-out baskets that it has not seen, else compare both models'
    own held-out figures; NoComparison (why) when neither can be done honestly."""
    manifest = registry.read_manifest(storage, candidate)
    try:
        active_manifest = registry.read_manifest(storage, active)
    except RecommenderError as err:
        return NoComparison(f"the active model cannot be read ({err.message})", blocks=False)
    if not measured(manifest) or holdout.CASES not in manifest["artifacts"]:
        why = _unmeasured_why(manifest)
        if measured(active_manifest):
            return NoComparison(
                f"{label} {candidate} cannot be measured ({why}), so nothing shows it is as good as the active "
                f"{active} ({_figures(active_manifest)})"
            )
        return NoComparison(
            f"neither {label} {candidate} ({why}) nor the active {active} ({_unmeasured_why(active_manifest)}) "
            f"can be measured, so nothing shows the first is as good as the second"
        )
    stored = holdout.read_cases(registry.read_verified(storage, candidate, holdout.CASES, registry.MODELS))
    try:
        known = set(Items.from_json(registry.read_verified(storage, active, ITEMS_FILE, registry.MODELS)).codes)
    except RecommenderError as err:
        return NoComparison(f"the active model cannot be loaded ({err.message})", blocks=False)
    # Cases the active model may have learned from would flatter it: only baskets it cannot have seen count. One
    # holding a product it does not know was not among its baskets; when most are such, it learned from another
    # catalog (another shop, the demo's data), whatever the dates.
    foreign = [c for c in stored["cases"] if not known.issuperset([c["hidden"], *c["query"]])]
    other_catalog = 2 * len(foreign) >= len(stored["cases"])
    period = active_manifest.get("period")
    cases_dated = period is not None and _dated(period)
    if "period" not in active_manifest or (period is not None and not cases_dated):
        cases, seen = [], "the active model was trained before training recorded the dates it learned from"
    elif period is None:
        cases, seen = [], "the active model learned from an undated file"
    else:
        cases = [
            c for c in stored["cases"] if c["time"] is not None and not period["first"] <= c["time"] <= period["last"]
        ]
        seen = (
            f"only {len(cases):,} of {label}'s are dated outside the purchases the active one learned from "
            f"({period['first'][:10]} to {period['last'][:10]})"
        )
    basis = ""
    if other_catalog:
        outside = {id(c) for c in cases}
        cases += [c for c in foreign if id(c) not in outside]
        basis = f", {len(foreign):,} of them with a product the active model does not know (it learned from others)"
    if len(cases) < MIN_CASES:
        if measured(active_manifest):
            return _own_holdouts(candidate, active, manifest["evaluation"], active_manifest["evaluation"], seen, label)
        if not cases_dated:
            seen += ", so which of the held-out baskets it has seen is unknown"
        else:
            seen += f"; at least {MIN_CASES} are needed"
        return NoComparison(
            f"the active model {active} cannot be measured ({_unmeasured_why(active_manifest)}) and cannot be "
            f"scored on {label}'s held-out baskets: {seen}"
        )
    try:
        model = load_model(storage, active)
    except RecommenderError as err:
        return NoComparison(f"the active model cannot be loaded ({err.message})", blocks=False)
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
        label=label,
        basis=basis,
    )


def _own_holdouts(candidate: str, active: str, new: dict, old: dict, seen: str, label: str) -> Comparison:
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
        why_own=f"; {seen}",
        label=label,
    )


def check(
    storage: Storage,
    candidate: str,
    force: bool = False,
    margin: float = MARGIN,
    progress: Callable[[str], None] = print,
    label: str = "the new model",
) -> Comparison | None:
    """Compare the candidate with the active model before it replaces it; ModelRefused when it is clearly worse
    or cannot be shown not to be (unless force). Returns the comparison (None when there was nothing to compare,
    with the reason reported)."""
    try:
        pointer = registry.active(storage)
    except PointerDamaged as err:
        progress(f"not compared with the active model: {err.message}")
        return None
    if pointer is None or pointer.version == candidate:
        return None
    comparison = compare(storage, candidate, pointer.version, label)
    if isinstance(comparison, NoComparison):
        if not comparison.blocks:
            progress(f"not compared with the active model: {comparison.why}")
        elif force:
            progress(f"not compared with the active model: {comparison.why}; activated anyway (forced)")
        else:
            raise ModelRefused(f"refused: {comparison.why}")
        return None
    if not comparison.worse(margin):
        progress(f"compared with the active model: {comparison.describe()}")
        return comparison
    text = f"{label} is clearly worse than the active one: {comparison.describe()}; more than {margin:.0%} below"
    if force:
        progress(f"{text}; activated anyway (forced)")
        return comparison
    raise ModelRefused(f"refused: {text}")
