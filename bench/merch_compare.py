"""The merchandised answer's speed against an older version of the code, in one process: `python -m
bench.merch_compare STORE OLD_SHARED [ROUNDS]` (STORE as bench.merch_answers leaves it; OLD_SHARED: the `shared`
folder of an older checkout, e.g. from `git archive`). The plain call and both versions' merchandised calls (the
bench's feed, 1,000 rules and three filters, with and without explain) in alternated passes over the 2,000 baskets;
each basket's least CPU time over the rounds (a shared machine only ever adds time), p50/p99 over the baskets; then
each step of the answer timed the same way (a timer around each of merch_fill's steps adds about 3 µs a call)."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.merch import paired_latency, synthetic_merchandising
from bench.merch_answers import _store, option_sets

STEPS = ("Eligibility", "_pinned", "_pin", "Scores", "_from_model", "_confidence", "_rounded", "reasons", "_picks")
clock = time.process_time_ns


def _older(shared: Path, into: Path) -> None:
    """shared/recommender copied into `into` as the package recommender_before (its imports renamed)."""
    shutil.copytree(shared / "recommender", into / "recommender_before")
    for path in (into / "recommender_before").rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\brecommender(?=[.\s])", "recommender_before", text))
    sys.path.insert(0, str(into))


def _least(calls: dict[str, Any], baskets: list, rounds: int) -> dict[str, np.ndarray]:
    """Each basket's least CPU time (ns) per call, passes alternated."""
    for basket in baskets[:300]:
        for call in calls.values():
            call(basket)
    least = {name: np.full(len(baskets), np.inf) for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times = least[name]
            for j, basket in enumerate(baskets):
                t = clock()
                call(basket)
                spent = clock() - t
                if spent < times[j]:
                    times[j] = spent
    return least


def _steps(fill_module: Any, call: Any, baskets: list, rounds: int) -> dict[str, np.ndarray]:
    """Each step's least CPU time (ns) per basket, and the whole call's, with a timer around each step."""
    spent: dict[str, int] = {}

    def timed(name: str, step: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            out = step(*args, **kwargs)
            spent[name] = spent.get(name, 0) + clock() - t
            return out

        return run

    # A step one version does not have (renamed, or not yet written) reads 0 for it.
    saved = {name: getattr(fill_module, name) for name in STEPS if hasattr(fill_module, name)}
    for name, step in saved.items():
        setattr(fill_module, name, timed(name, step))
    try:
        least = {name: np.full(len(baskets), np.inf) for name in (*STEPS, "whole call")}
        for _ in range(rounds):
            for j, basket in enumerate(baskets):
                spent.clear()
                t = clock()
                call(basket)
                spent["whole call"] = clock() - t
                for name, times in least.items():
                    times[j] = min(times[j], spent.get(name, 0))
    finally:
        for name, step in saved.items():
            setattr(fill_module, name, step)
    return least


def main(store: Path, old_shared: Path, rounds: int = 7) -> None:
    """Print the latency table and the steps table (µs)."""
    from recommender.serving import merch_fill
    from recommender.serving.merchandising import Policy

    with tempfile.TemporaryDirectory(prefix="merch-before-") as tmp:
        _older(old_shared, Path(tmp))
        import recommender_before.serving.merch_fill as old_fill  # noqa: PLC0415 - only once copied
        import recommender_before.serving.merchandising as old_merch  # noqa: PLC0415
        from recommender_before.core import registry as old_registry  # noqa: PLC0415
        from recommender_before.core.storage import LocalStorage as OldStorage  # noqa: PLC0415
        from recommender_before.serving.model import load_model as old_load  # noqa: PLC0415

        model, baskets = _store(store)
        feed, rules = synthetic_merchandising(model.items, model.item_price)
        after = model.with_policy(Policy(model.items, model.item_price, feed, rules, "feed", "rules"))
        storage = OldStorage(store)
        old_model = old_load(storage, old_registry.active_version(storage))
        old_model.warm()
        before = old_model.with_policy(old_merch.Policy(old_model.items, old_model.item_price, feed, rules, "f", "r"))
        sets = option_sets(model, feed)
        asked = {"explain": sets[0], "no explain": sets[1]}
        old_asked = {
            k: old_merch.Options(**{f: getattr(v, f) for f in v.__dataclass_fields__}) for k, v in asked.items()
        }
        calls: dict[str, Any] = {"plain": lambda b: model.recommend(b, 10)}
        for k in asked:
            calls[f"before, {k}"] = lambda b, o=old_asked[k]: before.recommend(b, 10, o)
            calls[f"after, {k}"] = lambda b, o=asked[k]: after.recommend(b, 10, o)
        least = _least(calls, baskets, rounds)
        plain99 = np.percentile(least["plain"], 99)
        print("| call (µs, least of", rounds, "per basket) | p50 | p99 | mean | p99 / plain p99 |")
        print("|---|---|---|---|---|")
        for name, times in least.items():
            p50, p99 = np.percentile(times, 50) / 1000, np.percentile(times, 99) / 1000
            print(f"| {name} | {p50:.0f} | {p99:.0f} | {times.mean() / 1000:.1f} | {p99 * 1000 / plain99:.2f} |")
        # The bench part's own figure (bench.merch.paired_latency: median of the per-pass p99 ratios, wall clock
        # and CPU time), for each version against the plain call.
        print("\n| bench.merch.paired_latency, 3 passes | p99 ratio (wall) | CPU-time p99 ratio | least p99 ratio |")
        print("|---|---|---|---|")
        for k in asked:
            for version, merch, options in (("before", before, old_asked[k]), ("after", after, asked[k])):
                got = paired_latency(model, merch, baskets, options, 3)
                print(
                    f"| {version}, {k} | {got['p99_ratio']:.2f} | {got['cpu_p99_ratio']:.2f} | "
                    f"{got['least_p99_ratio']:.2f} |"
                )
        for k in asked:
            steps = {
                "before": _steps(old_fill, calls[f"before, {k}"], baskets, max(3, rounds - 2)),
                "after": _steps(merch_fill, calls[f"after, {k}"], baskets, max(3, rounds - 2)),
            }
            print(f"\n| step, {k} (µs: mean / slowest 3% of baskets) | before | after |")
            print("|---|---|---|")
            for name in (*STEPS, "whole call"):
                cells = []
                for version in ("before", "after"):
                    whole = steps[version]["whole call"]
                    slow = whole >= np.percentile(whole, 97)
                    times = steps[version][name]
                    cells.append(f"{times.mean() / 1000:.1f} / {times[slow].mean() / 1000:.1f}")
                print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 7)
