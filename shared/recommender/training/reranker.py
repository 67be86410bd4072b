"""Training the learned re-ranker: validation periods carved from the end of the training data, a first-stage model
trained without them, its candidates for the periods' baskets with their features (serving's own code), and a
LambdaRank GBM (LightGBM) fitted on them, its hyperparameters chosen on those periods only; then the trees exported
to arrays (serving/reranker.py evaluates them without LightGBM) and the tables serving reads written beside them.

LightGBM is part of the base install; should it be missing, training says so in one line and the model ranks by its
first stage alone.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from recommender.core.errors import DataFileError
from recommender.serving.reranker import FEATURES, RERANK_FILE, Reranker, Trees
from recommender.training import rerank_batch
from recommender.training.ingest import Transactions, select_baskets
from recommender.training.rerank_batch import Batch
from recommender.training.rerank_tables import recency as _recency
from recommender.training.rerank_tables import tables

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RerankParams:
    """How the re-ranker is trained (stored in the manifest with the other parameters)."""

    enabled: bool = True
    candidates: int = 100  # first-stage candidates per validation query the trees learn from
    # Of those, the best (by first-stage score) the trees re-rank at answer time: a candidate's features do not depend
    # on the others re-ranked with it, so this only decides which can reach the answer. On Online Retail's selection
    # baskets HR@10 is the same from 100 down to 35 (falls at 30); at 50 the trees and links cost half
    # (bench/results/rerank.md).
    served: int = 50
    # Baskets of more items than this (known ones) are answered by the first stage alone: on Online Retail's
    # validation baskets the trees did not beat it beyond about 150 items (wholesale orders of hundreds of
    # products), and those answers cost the most (bench/results/rerank.md). The trees still learn from them.
    max_basket: int = 150
    days: int = 30  # length of each validation period
    periods: int = 1  # validation periods carved from the end of the training data (each costs a first-stage model)
    max_share: float = 0.25  # a period holds at most this share of the training baskets
    min_baskets: int = 50  # a period with fewer baskets is not carved
    # Fewer validation queries than this teach trees little beyond noise (and cost the training several seconds):
    # the model then ranks by its first stage, and says so.
    min_queries: int = 4000
    hidden_per_basket: int = 8  # queries per validation basket (each hides another item)
    max_queries: int = 16000
    select_share: float = 0.25  # one member: the validation baskets that stop it (the rest fit its trees)
    # Boosters averaged: with more than one, the validation baskets in as many folds, each booster stopped on its
    # fold and fitted on the others (a different seed each), the trees scoring their mean. One booster's test HR@10
    # on Online Retail moved 1.028-1.065x tuned EASE with its seed (mean 1.045x over twelve); the mean of three,
    # 1.041-1.071x (mean 1.055x), for 3x the fitting CPU and about 0.05 ms more per answer; four were no better on
    # validation (bench/results/rerank.md).
    members: int = 3
    max_rounds: int = 300
    patience: int = 30  # early stopping: rounds without a better NDCG@10 on the selection baskets
    # The grid searched on validation (the number of trees is chosen there too, by early stopping): 15 and 7 leaves
    # scored lower on Online Retail's validation baskets (bench/results/quality.md), so the default tries 31 only.
    num_leaves: tuple[int, ...] = (31,)
    learning_rate: float = 0.1  # 0.05 grew twice the trees (twice their answer time) for no gain on validation
    max_depth: int = 6
    min_data_in_leaf: int = 50
    max_bin: int = 255
    objective: str = "lambdarank"
    negatives: float = 1.0  # share of each query's other candidates the trees learn from (drawn at random)
    # Keep the trees only when they beat the first stage on the selection baskets (tests turn it off to get trees
    # from data too small to show a gain).
    require_gain: bool = True
    threads: int = 1
    seed: int = 0


@dataclass
class Fitted:
    """A trained re-ranker: its trees and what the manifest says of it."""

    trees: Trees | None
    spec: dict


def write(folder: Path, tx: Transactions, params: RerankParams, fitted: Fitted | None) -> dict:
    """rerank.npz (tables, and the trees when fitted) for a model of transactions in model order; the manifest's
    part."""
    arrays = tables(tx, params.candidates)
    if fitted is not None and fitted.trees is not None:
        arrays.update(fitted.trees.to_arrays())
        # Only beside trees: a validation period's first stage computes its rows from all `candidates`.
        arrays["served"] = np.asarray(min(params.served, params.candidates))
        arrays["max_basket"] = np.asarray(params.max_basket)
    with open(folder / RERANK_FILE, "wb") as f:
        np.savez(f, **arrays)
    return dict(fitted.spec) if fitted is not None else {"trees": False}


# --- trees ----------------------------------------------------------------------------------------------------------


def export(booster: object) -> Trees:
    """A LightGBM booster's trees as flat arrays (serving/reranker.Trees)."""
    feature, threshold, child, value, roots = [], [], [], [], []
    depth = 0

    def add(node: dict, level: int) -> int:
        nonlocal depth
        at = len(feature)
        feature.append(0)
        threshold.append(np.inf)
        child.extend((at, at))
        if "leaf_value" in node:
            value.append(float(node["leaf_value"]))
            depth = max(depth, level)
            return at
        if node.get("decision_type", "<=") != "<=" or node.get("missing_type", "None") == "Zero":
            raise ValueError(f"unsupported split {node.get('decision_type')} / {node.get('missing_type')}")
        value.append(float(node["internal_value"]))
        feature[at] = int(node["split_feature"])
        threshold[at] = float(node["threshold"])
        left = add(node["left_child"], level + 1)
        right = add(node["right_child"], level + 1)
        child[2 * at], child[2 * at + 1] = left, right
        return at

    for tree in booster.dump_model()["tree_info"]:
        roots.append(add(tree["tree_structure"], 0))
    return Trees(
        np.asarray(feature, dtype=np.intp),
        np.asarray(threshold, dtype=np.float64),
        np.asarray(child, dtype=np.intp),
        np.asarray(value, dtype=np.float64),
        np.asarray(roots, dtype=np.intp),
        depth,
    )


# --- validation periods and the training rows -----------------------------------------------------------------------


def carve(tx: Transactions, params: RerankParams) -> list[np.ndarray]:
    """Masks of the validation periods (oldest first), carved from the end of tx: the last `days` days each (at most
    max_share of the baskets), or for an undated file the last baskets in file order; fewer when the data is short."""
    n = len(tx.basket_ids)
    dated = ~np.isnat(tx.basket_time)
    periods: list[np.ndarray] = []
    taken = np.zeros(n, dtype=bool)
    cap = int(params.max_share * n)
    recency = _recency(tx)
    for _ in range(params.periods):
        left = np.flatnonzero(~taken)
        if not len(left):
            break
        order = left[np.lexsort((left, recency[left]))]
        if dated.any():
            seconds = recency[order]
            end = seconds[dated[order]].max() if dated[order].any() else None
            if end is None:
                break
            in_period = order[seconds >= end - params.days * 86400.0]
            in_period = in_period[-cap:] if len(in_period) > cap else in_period
        else:
            in_period = order[-cap:]
        if len(in_period) < params.min_baskets or len(in_period) >= len(order) - params.min_baskets:
            break
        mask = np.zeros(n, dtype=bool)
        mask[in_period] = True
        taken |= mask
        periods.append(mask)
    return periods[::-1]


@dataclass
class Rows:
    """The training rows of validation queries: features, labels, query of each row, basket of each query."""

    x: np.ndarray
    y: np.ndarray
    query: np.ndarray  # per row
    basket: np.ndarray  # per query: its validation basket (for splitting by basket)
    found: np.ndarray  # per query: whether its hidden item is among the candidates


def queries(tx: Transactions, mask: np.ndarray, params: RerankParams) -> list[tuple[int, list[str], str]]:
    """(basket, query codes, hidden code) of a period's baskets: up to hidden_per_basket per basket, seeded."""
    rng = np.random.default_rng(params.seed)
    order = np.argsort(tx.pair_basket, kind="stable")
    bounds = np.searchsorted(tx.pair_basket[order], np.arange(len(tx.basket_ids) + 1))
    out = []
    for b in np.flatnonzero(mask).tolist():
        items = sorted({tx.item_codes[i] for i in tx.pair_item[order[bounds[b] : bounds[b + 1]]].tolist()})
        if len(items) < 2:
            continue
        for h in rng.permutation(len(items))[: params.hidden_per_basket].tolist():
            out.append((b, [c for j, c in enumerate(items) if j != h], items[h]))
    if len(out) > params.max_queries:
        keep = np.sort(rng.choice(len(out), params.max_queries, replace=False))
        out = [out[k] for k in keep.tolist()]
    return out


# Queries whose features are computed in one pass: 64 on Online Retail (chunks of 16-256 queries cost 10-18% less
# CPU than one query at a time; 1,024 cost more, their arrays no longer in cache), fewer in a large catalogue (a
# pass holds an array over every item, and one over every description word, for each of its queries: 8 MB at most).
CHUNK = 64
CHUNK_CELLS = 1 << 21


def training_rows(model: object, cases: list[tuple[int, list[str], str]]) -> Rows:
    """Feature rows of each case's re-ranked candidates, computed on the first-stage model: its candidates one query
    at a time by serving's code, their features a chunk of queries at a time (training/rerank_batch.py: the values
    serving's Reranker.features gives, bit for bit, for 10-18% less CPU)."""
    reranker: Reranker = model.rerank_tables
    xs, ys, qs, baskets, found = [], [], [], [], []
    index = model.items.index
    batch = Batch([], [], [], [])
    targets: list[int] = []
    chunk = int(np.clip(CHUNK_CELLS // max(len(model.items), reranker.words, 1), 1, CHUNK))

    def flush() -> None:
        if not batch.baskets:
            return
        xs.append(rerank_batch.features(model, batch))
        for candidates, target in zip(batch.candidates, targets):
            y = candidates == target
            found.append(bool(y.any()))
            ys.append(y)
            qs.append(np.full(len(candidates), len(found) - 1))
        for part in (batch.baskets, batch.candidates, batch.first, batch.positions, targets):
            part.clear()

    for b, query, hidden in cases:
        basket = model.items.rows(query)
        target = index.get(hidden)
        if not len(basket) or target is None:
            continue
        # every table entry, a big basket's too: trees learnt from the bounded read ranked worse (serving/strongest.py)
        candidates, scores, positions = model.score_basket(basket, bounded=False)
        first = scores[candidates]
        at = reranker.choose(candidates, first)
        baskets.append(b)
        batch.baskets.append(basket)
        batch.candidates.append(candidates[at])
        batch.first.append(first[at])
        batch.positions.append(positions)
        targets.append(target)
        if len(targets) == chunk:
            flush()
    flush()
    if not found:
        return Rows(
            np.zeros((0, len(FEATURES))), np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
        )
    return Rows(
        np.vstack(xs), np.concatenate(ys).astype(np.float64), np.concatenate(qs), np.asarray(baskets), np.asarray(found)
    )


def hit_rate(scores: np.ndarray, rows: Rows, queries_: np.ndarray, k: int = 10) -> float:
    """HR@k of an ordering (higher score first, ties by the first stage's rank) over the given queries; a query
    whose hidden item is not among its candidates is a miss."""
    rank = rows.x[:, FEATURES.index("rank")]
    hits = 0
    chosen = np.zeros(int(rows.query.max(initial=-1)) + 1, dtype=bool)
    chosen[queries_] = True
    in_chosen = chosen[rows.query]
    q, s, r, y = rows.query[in_chosen], scores[in_chosen], rank[in_chosen], rows.y[in_chosen]
    order = np.lexsort((r, -s, q))
    q, y = q[order], y[order]
    first = np.searchsorted(q, q)
    position = np.arange(len(q)) - first
    hits = int(((position < k) & (y > 0)).sum())
    return hits / max(len(queries_), 1)


def fit(
    tx: Transactions, build: Callable[[Transactions, Path, set[str]], object], params: RerankParams, progress: Progress
) -> Fitted | None:
    """Train the re-ranker on validation periods carved from tx; build(train_tx, folder, codes) trains a
    first-stage model without them and returns it loaded (with its re-ranker tables, Annoy's answers for the codes
    asked while its index was built). None when disabled or impossible."""
    if not params.enabled:
        return None
    try:
        import lightgbm
    except ImportError:
        progress(
            "re-ranker: lightgbm is not installed (pip install lightgbm): the model ranks by its first stage alone"
        )
        return None
    started = time.perf_counter()
    periods = carve(tx, params)
    if not periods:
        progress("re-ranker: too little data to carve a validation period: the model ranks by its first stage alone")
        return None
    parts = []
    described = []
    period_cases = [queries(tx, mask, replace(params, seed=params.seed + p)) for p, mask in enumerate(periods)]
    asked = sum(len(c) for c in period_cases)
    if asked < params.min_queries:  # known before any model is trained for the periods
        progress(
            f"re-ranker: {asked:,} validation queries, fewer than the {params.min_queries:,} it needs: the model "
            f"ranks by its first stage alone"
        )
        return None
    for p, mask in enumerate(periods):
        earliest = _recency(tx)[mask].min()
        before = (_recency(tx) < earliest) & ~mask
        with tempfile.TemporaryDirectory(prefix="recommender-rerank-") as tmp:
            try:
                codes = {code for _b, query, _hidden in period_cases[p] for code in query}
                model = build(select_baskets(tx, before), Path(tmp), codes)
            except DataFileError as err:
                progress(f"re-ranker: before a validation period, {err.message}: first stage alone")
                return None
            rows = training_rows(model, period_cases[p])
        rows.basket = rows.basket + p * len(tx.basket_ids)  # baskets stay distinct across periods
        parts.append(rows)
        times = tx.basket_time[mask]
        times = times[~np.isnat(times)]
        described.append(
            {
                "baskets": int(mask.sum()),
                "queries": len(rows.found),
                "first": str(times.min())[:19] if len(times) else None,
                "last": str(times.max())[:19] if len(times) else None,
            }
        )
    rows = parts[0] if len(parts) == 1 else _concat(parts)  # one period: no copy of its 1.35M rows
    if not rows.found.any():
        progress("re-ranker: no validation basket's hidden item is among its candidates: first stage alone")
        return None
    # Split by basket: the hyperparameters and the number of trees are chosen on baskets the trees never saw.
    members = _members(rows, params)
    sel_q = np.concatenate([sel for _fit, sel in members])
    first_hr = hit_rate(-rows.x[:, FEATURES.index("rank")], rows, sel_q)
    best = None
    tried = []
    for leaves in params.num_leaves:
        boosters = []
        scores = np.zeros(len(rows.y))
        for k, (fit_q, member_sel_q) in enumerate(members):
            # The trees' scores are needed on the selection rows only: predicting the fitting rows too took 3.7 s
            # of CPU (a quarter of the fit) on Online Retail. Those of the selection queries whose hidden item is a
            # candidate are LightGBM's own, kept at the best round while it fitted (the rest are misses whatever
            # their scores). With several members, each basket is scored by the member that did not fit it.
            found_q = member_sel_q[rows.found[member_sel_q]]
            kept: dict = {}
            booster = _train(lightgbm, rows, fit_q, found_q, leaves, replace(params, seed=params.seed + k), kept)
            valid_rows, _ = _group_sizes(rows.query, found_q)
            if kept.get("round") == booster.best_iteration:
                scores[valid_rows] = kept["scores"]
            else:  # (not stopped early: the rounds' scores are not the kept trees')
                scores[valid_rows] = booster.predict(rows.x[valid_rows])
            boosters.append(booster)
        # As served: a basket of more than max_basket items keeps its first stage's order.
        big = rows.x[:, FEATURES.index("basket_size")] > params.max_basket
        scores[big] = -rows.x[big, FEATURES.index("rank")]
        hr = hit_rate(scores, rows, sel_q)
        tried.append({"num_leaves": leaves, "trees": sum(map(_trees, boosters)), "hr": round(hr, 4)})
        if best is None or hr > best[0]:
            best = (hr, boosters, leaves)
    hr, boosters, leaves = best
    use = hr > first_hr or not params.require_gain
    trees = mean_of([export(b) for b in boosters]) if use else None
    importance = np.sum([b.feature_importance(importance_type="gain") for b in boosters], axis=0)
    total = max(float(importance.sum()), 1e-12)
    spec = {
        "trees": use,
        "features": list(FEATURES),
        "candidates": params.candidates,
        "served": min(params.served, params.candidates),
        "max_basket": params.max_basket,
        "periods": described,
        "validation": {
            "queries": int(len(sel_q)),
            "first_stage_hr": round(first_hr, 4),
            "reranked_hr": round(hr, 4),
            "grid": tried,
        },
        "num_leaves": leaves,
        "members": len(boosters),
        "num_trees": sum(map(_trees, boosters)),
        "gain_share": {name: round(float(g) / total, 4) for name, g in zip(FEATURES, importance.tolist())},
        "seconds": round(time.perf_counter() - started, 2),
    }
    span = ", ".join(f"{d['first'] or '?'}..{d['last'] or '?'}"[:40] for d in described)
    measured_on = "selection baskets" if len(boosters) == 1 else f"baskets (out of fold, {len(boosters)} boosters)"
    progress(
        f"re-ranker: {len(periods)} validation period(s) ({span}), {len(rows.found):,} queries; HR@10 on its "
        f"{measured_on} {first_hr:.3f} first stage -> {hr:.3f} re-ranked"
        + ("" if use else ": not better, the model ranks by its first stage alone")
    )
    return Fitted(trees, spec) if use else None


def _members(rows: Rows, params: RerankParams) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each member's fitting queries (those whose hidden item is a candidate) and selection queries (its early
    stopping's, and the validation figure's), split by basket: one member, select_share of the baskets to select;
    several, the baskets in as many folds, member k selecting on fold k and fitting on the others."""
    rng = np.random.default_rng(params.seed)
    baskets = np.unique(rows.basket)
    if params.members == 1:
        chosen = set(rng.choice(baskets, max(1, int(params.select_share * len(baskets))), replace=False).tolist())
        is_select = np.asarray([b in chosen for b in rows.basket.tolist()])
        return [(np.flatnonzero(~is_select & rows.found), np.flatnonzero(is_select))]
    fold_of_basket = np.empty(len(baskets), dtype=np.intp)
    fold_of_basket[rng.permutation(len(baskets))] = np.arange(len(baskets)) % params.members
    fold = fold_of_basket[np.searchsorted(baskets, rows.basket)]
    return [(np.flatnonzero((fold != k) & rows.found), np.flatnonzero(fold == k)) for k in range(params.members)]


def mean_of(members: list[Trees]) -> Trees:
    """One set of trees scoring the mean of the members' scores (their trees in turn, each value divided by their
    number): what serving evaluates, and explains, as one forest."""
    if len(members) == 1:
        return members[0]
    offsets = np.cumsum([0] + [len(t.feature) for t in members[:-1]])
    return Trees(
        np.concatenate([t.feature for t in members]),
        np.concatenate([t.threshold for t in members]),
        np.concatenate([t.child + at for t, at in zip(members, offsets)]),
        np.concatenate([t.value for t in members]) / len(members),
        np.concatenate([t.roots + at for t, at in zip(members, offsets)]),
        max(t.depth for t in members),
    )


def _trees(booster: object) -> int:
    """The trees kept: up to the best iteration of the early stopping."""
    return int(booster.best_iteration or booster.num_trees())


def _concat(parts: list[Rows]) -> Rows:
    offset = 0
    qs = []
    for p in parts:
        qs.append(p.query + offset)
        offset += len(p.found)
    return Rows(
        np.vstack([p.x for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate(qs),
        np.concatenate([p.basket for p in parts]),
        np.concatenate([p.found for p in parts]),
    )


def _group_sizes(query: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the chosen queries (grouped, rows contiguous per query) and the group sizes."""
    mask = np.zeros(int(query.max(initial=-1)) + 1, dtype=bool)
    mask[chosen] = True
    rows = np.flatnonzero(mask[query])
    _, sizes = np.unique(query[rows], return_counts=True)
    return rows, sizes


def _train(
    lightgbm: object,
    rows: Rows,
    fit_q: np.ndarray,
    sel_q: np.ndarray,
    leaves: int,
    params: RerankParams,
    kept: dict | None = None,
) -> object:
    """One LambdaRank fit with early stopping on the selection queries; with kept, it is given the selection rows'
    scores (in row order) at the best round ("scores") and that round ("round", 1-based)."""
    fit_rows, fit_sizes = _group_sizes(rows.query, fit_q)
    if params.negatives < 1.0:
        drawn = np.random.default_rng(params.seed).random(len(fit_rows)) < params.negatives
        fit_rows = fit_rows[drawn | (rows.y[fit_rows] > 0)]
        _, fit_sizes = np.unique(rows.query[fit_rows], return_counts=True)
    sel_rows, sel_sizes = _group_sizes(rows.query, sel_q)
    train_set = lightgbm.Dataset(rows.x[fit_rows], rows.y[fit_rows], group=fit_sizes, free_raw_data=False)
    valid_set = lightgbm.Dataset(rows.x[sel_rows], rows.y[sel_rows], group=sel_sizes, reference=train_set)
    config = {
        "objective": params.objective,
        "metric": "ndcg",
        "eval_at": [10],
        "num_leaves": leaves,
        "max_depth": params.max_depth,
        "learning_rate": params.learning_rate,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": 0.9,
        "lambdarank_truncation_level": 20,
        "max_bin": params.max_bin,
        "seed": params.seed,
        "deterministic": True,
        "num_threads": params.threads,
        # Row-wise histograms build the same trees 10% faster here (1M rows of 23 features; LightGBM's own test
        # of both ways costs a fit's first seconds).
        "force_row_wise": True,
        "verbosity": -1,
    }
    latest: list[np.ndarray] = []

    def scores(preds: np.ndarray, _data: object) -> tuple[str, float, bool]:
        # LightGBM's running scores of the selection rows, the same bits as predict() gives for that round's trees
        # (it reuses its buffer: copied); a metric that early stopping ignores (first_metric_only).
        latest[:] = [np.array(preds, dtype=np.float64)]
        return "kept", 0.0, True

    def keep(env: object) -> None:
        # early stopping's best round: the first with the highest NDCG@10 (a strict improvement)
        score = env.evaluation_result_list[0][2]
        if "best" not in kept or score > kept["best"]:
            kept.update(best=score, round=env.iteration + 1, scores=latest[0])

    keep.order = 0  # before early stopping's callback, which raises at its last round
    tracking = kept is not None
    if kept is None:
        kept = {}
    return lightgbm.train(
        config,
        train_set,
        num_boost_round=params.max_rounds,
        valid_sets=[valid_set],
        feval=scores if tracking else None,
        callbacks=[
            lightgbm.early_stopping(params.patience, first_metric_only=True, verbose=False),
            *([keep] if tracking else []),
        ],
    )
