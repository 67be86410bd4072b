"""The learned re-ranker's costs on a real file: training time with and without it, in-process `Model.recommend`
latency (p50/p99 over the evaluation's test baskets) with and without it, and each feature group's share of the
answer's CPU time.

`python -m bench.rerank [PATH] [--store DIR] [--no-train]` (PATH defaults to Online Retail in the shared datasets):
--train-only stops after the training times (with the CPU seconds of the re-ranker's parts). The test baskets are the evaluation's (`make evaluate`, last 30 days, SEED=0); the models are trained on the days
before them. --store keeps the trained re-ranked model there and reuses it with --no-train.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from recommender.core import registry
from recommender.core.storage import LocalStorage
from recommender.serving.model import load_model
from recommender.tools.evaluation_protocol import temporal_split
from recommender.training.ingest import load_transactions
from recommender.training.pipeline import publish_model
from recommender.training.recipe import TrainingParams
from recommender.training.reranker import RerankParams

DATA = Path("/work/shared/datasets/online_retail.csv.gz")


def _train(train, params: TrainingParams, folder: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds (this process, every thread: robust to a busy machine) to publish a model of train into
    folder, and its version."""
    started, cpu = time.perf_counter(), time.process_time()
    manifest = publish_model(train, params, LocalStorage(folder), source=None, progress=lambda _m: None)
    return time.perf_counter() - started, time.process_time() - cpu, manifest["version"]


@contextmanager
def cpu_parts() -> Iterator[dict[str, float]]:
    """CPU seconds (this process) of the re-ranker's training parts while inside: the features of the validation
    queries, the LightGBM fits, the trees' predictions on the selection baskets, and all of reranker.fit (the rest
    of it: the first-stage models of the validation periods)."""
    import lightgbm

    from recommender.training import reranker

    spent: dict[str, float] = {}
    patched = [(reranker, "training_rows", "features"), (reranker, "_train", "lightgbm fit")]
    patched += [(lightgbm.Booster, "predict", "lightgbm predict"), (reranker, "fit", "re-ranker total")]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _label in patched]

    def timed(fn, label):  # noqa: ANN001, ANN202
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            cpu = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - cpu

        return call

    for (owner, name, label), (_o, _n, fn) in zip(patched, saved):
        setattr(owner, name, timed(fn, label))
    try:
        yield spent
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)
        if "re-ranker total" in spent:
            spent["first stages and the rest"] = spent["re-ranker total"] - sum(
                v for k, v in spent.items() if k not in ("re-ranker total",)
            )


def latency(models: dict, baskets: list[list[str]], passes: int = 3, small: int = 100) -> dict:
    """CPU and wall time per Model.recommend(basket, 10) in microseconds (p50, p99) of each model, the models
    taking turns on every basket (a busy machine slows them alike); Annoy warmed by a first pass. Also the
    p99 over baskets of at most `small` items."""
    for b in baskets:
        for model in models.values():
            model.recommend(b, 10)
    cpu = {name: [] for name in models}
    wall = {name: [] for name in models}
    sizes = []
    for _ in range(passes):
        for b in baskets:
            sizes.append(len(b))
            for name, model in models.items():
                c, w = time.thread_time_ns(), time.perf_counter_ns()
                model.recommend(b, 10)
                cpu[name].append(time.thread_time_ns() - c)
                wall[name].append(time.perf_counter_ns() - w)
    few = np.asarray(sizes) <= small

    def q(xs: list[int], p: float, mask: np.ndarray | None = None) -> float:
        xs = np.asarray(xs)
        return round(float(np.percentile(xs if mask is None else xs[mask], p)) / 1000.0, 1)

    return {
        name: {
            "cpu_p50": q(cpu[name], 50),
            "cpu_p99": q(cpu[name], 99),
            f"cpu_p99_baskets_le_{small}": q(cpu[name], 99, few),
            "wall_p50": q(wall[name], 50),
            "wall_p99": q(wall[name], 99),
        }
        for name in models
    }


def profile(model, baskets: list[list[str]]) -> dict:
    """Mean CPU microseconds per basket of each part of the re-ranked answer (first stage, each feature group,
    the trees), measured by calling the parts one by one on the same inputs."""
    from recommender.serving.reranker import CUSTOMER_NEIGHBOURS, SESSION_NEIGHBOURS, Slots

    rr = model.reranker
    parts: dict[str, list[int]] = {}

    def timed(name: str, fn, *args):
        t = time.thread_time_ns()
        out = fn(*args)
        parts.setdefault(name, []).append(time.thread_time_ns() - t)
        return out

    for codes in baskets:
        basket = np.asarray(sorted({model.items.index[c] for c in codes if c in model.items.index}), dtype=np.int64)
        if not len(basket):
            continue
        candidates, scores, positions = timed("first stage (score_basket)", model.score_basket, basket)
        first = scores[candidates]
        at = timed("choose", rr.choose, candidates, first)
        cand = candidates[np.sort(at)]
        x = timed("features (all)", rr.features, model, basket, cand, first[np.sort(at)], positions)
        slots = timed("feature: slots", Slots, cand, len(rr.item))
        timed("feature: links (6)", rr.links, model, basket, positions, slots, np.zeros_like(x))
        timed("feature: price", rr.price_ratio, basket, cand)
        timed("feature: text", rr.text, basket, cand)
        timed("feature: session-kNN", rr.sessions.share, basket, slots, SESSION_NEIGHBOURS)
        timed("feature: customer-kNN (5)", rr.customers.neighbours, basket, slots, CUSTOMER_NEIGHBOURS)
        timed("trees", rr.trees.score, x)
    return {k: round(float(np.mean(v)) / 1000.0, 1) for k, v in parts.items()}


def main() -> None:
    """Run the measurements and print them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", default=str(DATA))
    parser.add_argument("--store", default="/tmp/rerank-bench")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--baskets", type=int, default=3000)
    args = parser.parse_args()
    tx = load_transactions(Path(args.path))
    split = temporal_split(tx, 30, 0)
    codes = split.train.item_codes
    baskets = [[codes[i] for i in q] for q in split.cases.queries][: args.baskets]
    store = Path(args.store)
    result: dict = {"baskets": len(baskets)}
    if not args.no_train:
        plain = _train(split.train, TrainingParams(), store / "plain")
        with cpu_parts() as parts:
            reranked = _train(split.train, TrainingParams(rerank=RerankParams(enabled=True)), store / "reranked")
        result["train_seconds"] = {
            "plain": {"wall": round(plain[0], 1), "cpu": round(plain[1], 1)},
            "reranked": {"wall": round(reranked[0], 1), "cpu": round(reranked[1], 1)},
            "cpu_ratio": round(reranked[1] / plain[1], 2),
            "reranker_cpu_parts": {k: round(v, 1) for k, v in parts.items()},
        }
        print(json.dumps(result), flush=True)
    if args.train_only:
        return
    storage = LocalStorage(store / "reranked")
    version = sorted(registry.list_versions(storage))[-1]
    model = load_model(storage, version)
    info = model.manifest["model"].get("rerank") or {}
    result["trees"] = {"count": int(info.get("num_trees", 0)), "validation": info.get("validation")}
    result["latency"] = latency({"reranked": model, "first_stage": model.first_stage()}, baskets)
    result["profile"] = profile(model, baskets)
    print(json.dumps(result, indent=1), flush=True)


if __name__ == "__main__":
    main()


# --- quality of variants (offline: features computed once, the trees refitted per variant) -------------------------


def build_rows(path: Path, cache: Path) -> None:
    """The re-ranker's validation rows (the last 30 days before the test period, features from a first stage
    trained before them) and the test cases' rows (features from the first stage trained on every day before
    the test period), as the served path computes them; saved to cache (npz)."""
    import tempfile
    from dataclasses import replace

    from recommender.training import reranker
    from recommender.training.ingest import select_baskets
    from recommender.training.rerank_tables import recency

    tx = load_transactions(path)
    split = temporal_split(tx, 30, 0)
    params = TrainingParams(rerank=RerankParams(enabled=True))
    rp = params.rerank

    def first_stage_of(train, folder):
        from recommender.serving.model import open_model
        from recommender.training.recipe import build_model

        info = build_model(train, params, folder, lambda _t: None, rerank=reranker.Fitted(None, {"trees": False}))
        return open_model(lambda name: folder / name, "v", {"model": info})

    train = split.train
    mask = reranker.carve(train, rp)[0]
    cases = reranker.queries(train, mask, replace(rp, seed=rp.seed))
    before = (recency(train) < recency(train)[mask].min()) & ~mask
    codes = train.item_codes
    test_cases = [
        (i, [codes[j] for j in q], codes[h]) for i, (q, h) in enumerate(zip(split.cases.queries, split.cases.hidden))
    ]
    out = {}
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        t = time.perf_counter()
        val_model = first_stage_of(select_baskets(train, before), Path(a))
        out["t_first_stage"] = time.perf_counter() - t
        t = time.perf_counter()
        val = reranker.training_rows(val_model, cases)
        out["t_val_rows"] = time.perf_counter() - t
        test_model = first_stage_of(train, Path(b))
        test = reranker.training_rows(test_model, test_cases)
    for name, rows in (("val", val), ("test", test)):
        for field in ("x", "y", "query", "basket", "found"):
            out[f"{name}_{field}"] = getattr(rows, field)
    out["test_cases"] = len(test_cases)
    np.savez(cache, **out)
    print({k: v for k, v in out.items() if k.startswith("t_")}, flush=True)


def variant(cache: Path, drop: tuple[str, ...] = (), depth: int = 100, **overrides) -> dict:
    """Validation (selection baskets) and test HR@10 of trees fitted on the cached rows with some features
    zeroed, fewer candidates re-ranked (depth) or other RerankParams; and the seconds LightGBM took."""
    from dataclasses import replace

    import lightgbm

    from recommender.serving.reranker import FEATURES
    from recommender.training import reranker

    data = np.load(cache)
    rp = replace(RerankParams(enabled=True), **overrides)

    def rows(name: str) -> reranker.Rows:
        r = reranker.Rows(*(data[f"{name}_{f}"] for f in ("x", "y", "query", "basket", "found")))
        keep = r.x[:, FEATURES.index("rank")] <= depth
        x = r.x[keep].copy()
        for f in drop:
            x[:, FEATURES.index(f)] = 0.0
        found = np.zeros(len(r.found), dtype=bool)
        found[r.query[keep][r.y[keep] > 0]] = True
        return reranker.Rows(x, r.y[keep], r.query[keep], r.basket, found)

    val, test = rows("val"), rows("test")
    rng = np.random.default_rng(rp.seed)
    baskets = np.unique(val.basket)
    chosen = set(rng.choice(baskets, max(1, int(rp.select_share * len(baskets))), replace=False).tolist())
    is_select = np.asarray([b in chosen for b in val.basket.tolist()])
    if rp.hidden_per_basket < 8:  # fewer queries per basket: the first ones drawn (queries keep their order)
        first_of = np.searchsorted(val.basket, val.basket)
        few = np.arange(len(val.basket)) - first_of < rp.hidden_per_basket
    else:
        few = np.ones(len(val.basket), dtype=bool)
    fit_q = np.flatnonzero(~is_select & val.found & few)
    sel_q = np.flatnonzero(is_select)
    t = time.perf_counter()
    booster = reranker._train(lightgbm, val, fit_q, sel_q[val.found[sel_q]], rp.num_leaves[0], rp)
    seconds = time.perf_counter() - t
    all_test = np.arange(len(test.found))
    n_cases = int(data["test_cases"])
    return {
        "drop": list(drop),
        "depth": depth,
        **overrides,
        "trees": reranker._trees(booster),
        "fit_s": round(seconds, 1),
        "val_first": round(reranker.hit_rate(-val.x[:, 1], val, sel_q), 4),
        "val": round(reranker.hit_rate(booster.predict(val.x), val, sel_q), 4),
        "test_first": round(reranker.hit_rate(-test.x[:, 1], test, all_test) * len(all_test) / n_cases, 4),
        "test": round(reranker.hit_rate(booster.predict(test.x), test, all_test) * len(all_test) / n_cases, 4),
    }
