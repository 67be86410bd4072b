"""Every field of every merchandised answer on Online Retail, written to a file to compare two versions of the
code: `python -m bench.merch_answers STORE OUT` trains the model into STORE when it holds none (and keeps the
bench's 2,000 baskets beside it), then writes each answer's picks (item, score, source, confidence, reasons, boost,
row, attributes, ranked_by, like), exhausted, fallback and warnings under the bench's options and others, for the
bench's rules and for rules many baskets trigger, with n of 10 and 40, and under the popular baseline. Run it with
each version of the code (PYTHONPATH) and compare the files (`cmp`): a change to the answer's speed must leave
them identical."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT
from bench.merch import synthetic_merchandising


def _store(store: Path) -> tuple[Any, list[list[str]]]:
    """The Online Retail model in store (trained there first when absent) and the bench's baskets."""
    from bench.deployment import sample_baskets
    from recommender.core import registry
    from recommender.core.storage import LocalStorage
    from recommender.serving.model import load_model

    storage = LocalStorage(store)
    saved = store / "baskets.json"
    if not saved.exists():
        from bench.options import RETAIL_CSV, retail_file
        from recommender.training.ingest import load_transactions
        from recommender.training.pipeline import train

        csv = retail_file(RETAIL_CSV)
        train(csv, storage, progress=lambda _m: None)
        saved.write_text(json.dumps(sample_baskets(load_transactions(csv), 2000)))
    model = load_model(storage, registry.active_version(storage))
    model.warm()
    return model, json.loads(saved.read_text())


def busy_rules(model: Any, rules: dict) -> dict:
    """The bench's rules plus pins, do_not_pair and boosts by category and brand that many baskets trigger."""
    codes, popular = model.items.codes, model.items.most_popular()
    top = [codes[i] for i in popular[:60]]
    out = json.loads(json.dumps(rules))
    out["pin"] += [
        {"basket": {"code": [a]}, "item": {"code": [b]}, "position": 1 + k % 7}
        for k, (a, b) in enumerate(zip(top[:30], top[30:]))
    ]
    out["do_not_pair"] += [{"basket": {"code": [a]}, "item": {"category": ["Dept S > Holder"]}} for a in top[:20]] + [
        {"basket": {"brand": ["Brand3"]}, "item": {"brand": ["Brand7", "Brand8"]}}
    ]
    out["boost"] += [
        {"category": ["Dept J > Bag"], "factor": 3.0},
        {"category": ["Dept R > Cases"], "factor": 0.2},
        {"brand": ["Brand1"], "factor": 1.7},
        {"brand": ["Brand2", "Brand5"], "factor": 0.6},
    ]
    return out


def option_sets(model: Any, feed: dict) -> list[Any]:
    """The bench's options and others touching every step of the answer."""
    from recommender.serving.merchandising import Options

    departments = sorted({a["category"].split(" > ")[0] for a in feed["items"].values()})
    top = model.items.codes[model.items.most_popular()[0]]
    return [
        Options(exclude=(top,), exclude_categories=(departments[0],), price_max=10.0, explain=True),  # the bench's
        Options(exclude=(top,), exclude_categories=(departments[0],), price_max=10.0),
        Options(explain=True),
        None,
        Options(max_per_category=1, explain=True),
        Options(max_per_category=2, price_min=1.0, explain=True),
        Options(categories=(departments[3], departments[5]), min_confidence=0.01, explain=True),
        Options(max_price_ratio=1.5, explain=True, exclude_categories=("No Such Category",)),
        Options(min_confidence=0.05, max_per_category=3),
        Options(price_max=0.5, explain=True),
    ]


def pick_fields(pick: Any) -> list:
    """Every field of a pick, JSON-ready (floats written exactly: repr)."""
    because = None if pick.because is None else pick.because.as_list()
    return [
        list(pick.item),
        pick.score,
        pick.source,
        pick.confidence,
        because,
        pick.boost,
        pick.row,
        pick.attributes,
        pick.ranked_by,
        None if pick.like is None else list(pick.like),
    ]


def answers(model: Any, baskets: list[list[str]], options: Any, n: int) -> list:
    """Each basket's answer, every field."""
    out = []
    for basket in baskets:
        got = model.recommend(basket, n, options)
        out.append([[pick_fields(p) for p in got.items], got.exhausted, got.fallback, list(got.warnings), got.unknown])
    return out


def main(store: Path, out: Path) -> None:
    """Write every answer to out (one line per rules set, options and n), and each line's digest to stdout."""
    from recommender.serving.arms import PopularBaseline
    from recommender.serving.merchandising import Policy

    model, baskets = _store(store)
    feed, rules = synthetic_merchandising(model.items, model.item_price)
    sets = option_sets(model, feed)
    with out.open("w") as f:
        for name, these_rules in (("bench", rules), ("busy", busy_rules(model, rules))):
            policy = Policy(model.items, model.item_price, feed, these_rules, "feed", name)
            merch = model.with_policy(policy)
            for k, options in enumerate(sets):
                for n, chosen in ((10, baskets), (40, baskets[:300])):
                    line = json.dumps([name, k, n, answers(merch, chosen, options, n)])
                    f.write(line + "\n")
                    print(name, k, n, hashlib.sha256(line.encode()).hexdigest()[:16], flush=True)
        busy = Policy(model.items, model.item_price, feed, busy_rules(model, rules))
        baseline = PopularBaseline.of(model).with_policy(busy)
        for k, options in enumerate(sets[:4]):
            line = json.dumps(["popular", k, 10, answers(baseline, baskets[:300], options, 10)])
            f.write(line + "\n")
            print("popular", k, 10, hashlib.sha256(line.encode()).hexdigest()[:16], flush=True)
    print("numpy", np.__version__, "code", ROOT)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
