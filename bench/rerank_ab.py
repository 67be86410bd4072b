"""The re-ranked answer's cost, this tree's serving code against another git revision's, in one process.

`python -m bench.rerank_ab [--against main] [--store DIR] [--repeat 3]` (PYTHONPATH=. from the repository root):
the model trained by `python -m bench.rerank --store DIR` (its `reranked` folder) is loaded twice, once by this
tree's `serving/model.py`, `reranker.py`, `rerank_links.py` and `tree_eval.py` and once by the revision's (read with `git show`; the other
modules are this tree's), and both answer every test basket of `make evaluate` DAYS=30 (Online Retail), taking
turns basket by basket. Each answer's figure is the least CPU time of `--repeat` runs (a shared machine's
interruptions only ever add time), reported by basket size and by part; the two must give the same answers.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from bench.rerank import DATA
from recommender.core import registry
from recommender.core.storage import LocalStorage

SIZES = ((1, 4), (5, 19), (20, 49), (50, 99), (100, 100_000))
# The serving modules read from the other revision, each after those it imports.
SWAPPED = ("tree_eval", "rerank_links", "reranker", "model")


def revision_modules(ref: str) -> types.ModuleType:
    """The revision's serving/model.py (with its own serving/reranker.py) as fresh modules; returns the model's."""
    root = Path(__file__).resolve().parents[1]
    tag = re.sub(r"\W", "_", ref)
    modules = {}
    for name in SWAPPED:
        path = f"shared/recommender/serving/{name}.py"
        source = subprocess.run(
            ["git", "-C", str(root), "show", f"{ref}:{path}"], capture_output=True, text=True, check=True
        ).stdout
        for other in SWAPPED:
            source = source.replace(f"from recommender.serving.{other} import", f"from ab_{tag}_{other} import")
            source = source.replace(
                f"from recommender.serving import {other}\n", f"import ab_{tag}_{other} as {other}\n"
            )
        module = types.ModuleType(f"ab_{tag}_{name}")
        module.__file__ = f"{ref}:{path}"
        sys.modules[module.__name__] = module
        exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - the repository's own code
        modules[name] = module
    return modules["model"]


def test_baskets(path: Path, limit: int) -> list[list[str]]:
    """The evaluation's test baskets (last 30 days, SEED=0), as codes."""
    from recommender.tools.evaluation_protocol import temporal_split
    from recommender.training.ingest import load_transactions

    split = temporal_split(load_transactions(path), 30, 0)
    codes = split.train.item_codes
    return [[codes[i] for i in q] for q in split.cases.queries][:limit]


def _least(fn, repeat: int) -> tuple[int, object]:
    best, out = None, None
    for _ in range(repeat):
        t = time.thread_time_ns()
        out = fn()
        took = time.thread_time_ns() - t
        best = took if best is None else min(best, took)
    return best, out


def parts(model, codes: list[str], repeat: int) -> dict[str, int]:
    """Least CPU ns of each part of one re-ranked answer, each called alone on the same inputs."""
    rr = model.reranker
    mod = sys.modules[type(rr).__module__]
    basket = np.asarray(sorted({model.items.index[c] for c in codes if c in model.items.index}), dtype=np.int64)
    out = {}
    out["first stage"], (candidates, scores, positions) = _least(lambda: model.score_basket(basket), repeat)
    first = scores[candidates]
    out["choose"], at = _least(lambda: np.sort(rr.choose(candidates, first)), repeat)
    cand, f = candidates[at], first[at]
    out["features"], x = _least(lambda: rr.features(model, basket, cand, f, positions), repeat)
    slots = mod.Slots(cand, len(rr.item))
    out["links"], _ = _least(lambda: rr.links(model, basket, positions, slots, np.zeros_like(x)), repeat)
    out["price"], _ = _least(lambda: rr.price_ratio(basket, cand), repeat)
    out["text"], _ = _least(lambda: rr.text(basket, cand), repeat)
    out["session-kNN"], _ = _least(lambda: rr.sessions.share(basket, slots, mod.SESSION_NEIGHBOURS), repeat)
    out["customer-kNN"], _ = _least(lambda: rr.customers.neighbours(basket, slots, mod.CUSTOMER_NEIGHBOURS), repeat)
    out["trees"], _ = _least(lambda: rr.trees.score(x), repeat)
    return out


def compare(models: dict, baskets: list[list[str]], repeat: int) -> dict:
    """Per model: least-of-repeat CPU µs of Model.recommend(basket, 10) (mean, p50, p99; all and by basket size),
    and mean µs of each part (over all baskets, and over those of 100 items or more); the models take turns on every basket, each first on every other one. Also how many answers differ."""
    for b in baskets:  # Annoy's answers remembered, caches warm
        for model in models.values():
            model.recommend(b, 10)
    whole = {name: [] for name in models}
    part = {name: {} for name in models}
    differ = 0
    names = list(models)
    for i, b in enumerate(baskets):
        answers = []
        for name in names[i % 2 :] + names[: i % 2]:  # each goes first on every other basket
            model = models[name]
            took, rec = _least(lambda model=model, b=b: model.recommend(b, 10), repeat)
            whole[name].append(took)
            answers.append(rec.items)
            if model.reranker is not None and any(c in model.items.index for c in b):
                for k, v in parts(model, b, repeat).items():
                    part[name].setdefault(k, []).append((len(set(b)), v))
        differ += any(a != answers[0] for a in answers)
    sizes = np.asarray([len(set(b)) for b in baskets])

    def stats(xs: np.ndarray) -> dict:
        xs = np.asarray(xs) / 1000.0
        return {
            "n": len(xs),
            "mean": round(float(xs.mean()), 1),
            "p50": round(float(np.percentile(xs, 50)), 1),
            "p99": round(float(np.percentile(xs, 99)), 1),
        }

    out = {"baskets": len(baskets), "answers_differ": differ}
    for name in models:
        xs = np.asarray(whole[name])
        out[name] = {
            "all": stats(xs),
            **{f"{lo}-{hi}": stats(xs[(sizes >= lo) & (sizes <= hi)]) for lo, hi in SIZES},
            **{
                label: {
                    k: round(float(np.mean([t for size, t in v if size >= least])) / 1000.0, 1)
                    for k, v in part[name].items()
                }
                for label, least in (("parts", 0), ("parts_100_items_or_more", 100))
            },
        }
    return out


def main() -> None:
    """Load the model both ways, compare, print JSON."""
    from recommender.serving.model import load_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", default=str(DATA))
    parser.add_argument("--against", default="main")
    parser.add_argument("--store", default="/tmp/rerank-bench")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baskets", type=int, default=3000)
    parser.add_argument("--plain", action="store_true", help="the first stage alone (re-ranker off)")
    args = parser.parse_args()
    baskets = test_baskets(Path(args.path), args.baskets)
    storage = LocalStorage(Path(args.store) / "reranked")
    version = sorted(registry.list_versions(storage))[-1]
    other = revision_modules(args.against)
    loads = {"this tree": load_model, args.against: other.load_model}
    load_ms = {
        name: round(_least(lambda f=f: f(storage, version), args.repeat)[0] / 1e6, 1) for name, f in loads.items()
    }
    models = {name: f(storage, version) for name, f in loads.items()}
    if args.plain:
        models = {name: model.first_stage() for name, model in models.items()}
    for model in models.values():
        model.warm()
    result = compare(models, baskets, args.repeat)
    result["load_model_cpu_ms"] = load_ms  # the model's load (cold start), least of --repeat
    print(json.dumps(result, indent=1), flush=True)


if __name__ == "__main__":
    main()
