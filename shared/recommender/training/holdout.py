"""Held-out evaluation at training: the most recent baskets are kept out of training, then the trained model is
measured on them through the served path (`Model.recommend`).

What a training gets from it (README, "Quality"):
- `manifest["evaluation"]`: HR@10 and MRR@10 of the model and of popularity, with `make evaluate`'s protocol
  (one known item of each held-out basket hidden, the rest asked for n=10) on baskets the model never saw;
- `calibration.json`: confidence fitted on the same baskets split at random (`training/calibration.py`);
- `holdout.json.gz`: the cases with the model's rank of each hidden item, so that activation can score the
  active model on them (`training/gate.py`).

Everything takes plain values (lists of codes, numpy arrays) and a folder of artifacts, so any trainer (pandas
or Spark) can call `split_mask` to choose the baskets and `assess` once its artifacts are written.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recommender.serving.held_out import (  # noqa: F401 (re-exported: training and its tests name them here)
    CASES,
    MIN_HOLDOUT_BASKETS,
    HoldoutPolicy,
    K,
    answer_ranks,
    hit_metrics,
    read_cases,
)
from recommender.serving.model import Model, open_model
from recommender.serving.reranker import squash
from recommender.training import calibration
from recommender.training.calibration import Observations
from recommender.training.ingest import Transactions, select_baskets

PROTOCOL = "most recent baskets held out; one known item of each hidden, the rest asked for 10 (make evaluate's)"
CALIBRATION_DEPTH = 20  # ranks observed per held-out query for the calibration
CALIBRATION_QUERIES = 500  # held-out baskets split for the calibration (10,000 observations: plenty for a curve)
CALIBRATION = "calibration.json"
FORMAT = 1


@dataclass(frozen=True)
class HeldOut:
    """The held-out baskets, as plain values."""

    basket_ids: list[str]
    times: np.ndarray  # datetime64[s] per basket, NaT when undated
    items: list[list[str]]  # distinct stock codes of each basket
    cutoff: np.datetime64 | None  # the earliest held-out time (None for undated files: the last baskets in file order)


def split_mask(basket_time: np.ndarray, policy: HoldoutPolicy) -> np.ndarray:
    """Which baskets to hold out: the most recent dated ones (ties by file order), or the last ones in file order
    when the file has no dates; undated baskets of a dated file stay in training."""
    n = len(basket_time)
    mask = np.zeros(n, dtype=bool)
    dated = ~np.isnat(basket_time)
    if not dated.any():
        size = policy.size(n)
        if size:
            mask[n - size :] = True
        return mask
    rows = np.flatnonzero(dated)
    size = policy.size(len(rows))
    if size:
        order = rows[np.lexsort((rows, basket_time[rows].view("int64")))]
        mask[order[len(order) - size :]] = True
    return mask


def split(tx: Transactions, policy: HoldoutPolicy) -> tuple[Transactions, HeldOut | None]:
    """The training part and the held-out baskets (None when the file is too small for a holdout)."""
    mask = split_mask(tx.basket_time, policy)
    if not mask.any():
        return tx, None
    rows = np.flatnonzero(mask)
    pairs = mask[tx.pair_basket]
    basket, item = tx.pair_basket[pairs], tx.pair_item[pairs]
    order = np.argsort(basket, kind="stable")
    basket, item = basket[order], item[order]
    starts = np.searchsorted(basket, rows)
    stops = np.searchsorted(basket, rows, side="right")
    codes = tx.item_codes
    items = [[codes[i] for i in item[a:b].tolist()] for a, b in zip(starts.tolist(), stops.tolist())]
    times = tx.basket_time[rows]
    dated = times[~np.isnat(times)]
    held = HeldOut([tx.basket_ids[b] for b in rows.tolist()], times, items, dated.min() if len(dated) else None)
    return select_baskets(tx, ~mask), held


def _with_two_known(baskets: Sequence[Collection[str]], known: Collection[str]) -> Iterator[tuple[int, list[str]]]:
    """Each basket holding two or more known codes: its position, and those codes sorted."""
    for position, codes in enumerate(baskets):
        present = sorted(c for c in set(codes) if c in known)
        if len(present) >= 2:
            yield position, present


def leave_one_out(
    baskets: Sequence[Collection[str]], known: Collection[str], seed: int
) -> list[tuple[int, list[str], str]]:
    """make evaluate's cases: for each basket with two or more known codes, one of them (sorted by code, picked by a
    seeded generator) is hidden and the others are the query. Returns (basket position, query, hidden)."""
    rng = np.random.default_rng(seed)
    out = []
    for position, present in _with_two_known(baskets, known):
        h = int(rng.integers(len(present)))
        out.append((position, [c for j, c in enumerate(present) if j != h], present[h]))
    return out


def random_splits(
    baskets: Sequence[Collection[str]], known: Collection[str], seed: int
) -> list[tuple[int, list[str], set[str]]]:
    """For each basket with two or more known codes: a random part of them as the query (1 to all but one), the
    rest as what the shopper bought. Returns (basket position, query, bought)."""
    rng = np.random.default_rng(seed)
    out = []
    for position, present in _with_two_known(baskets, known):
        perm = rng.permutation(len(present))
        q = int(rng.integers(1, len(present)))
        out.append((position, [present[i] for i in perm[:q]], {present[i] for i in perm[q:]}))
    return out


def popularity_ranks(model: Model, queries: Sequence[Sequence[str]], hidden: Sequence[str], k: int = K) -> np.ndarray:
    """Rank of each hidden code among the most popular training items not in its query; 0 beyond k."""
    index = model.items.index
    position = np.empty(len(model.items), dtype=np.int64)
    position[np.asarray(model.items.most_popular(), dtype=np.int64)] = np.arange(len(model.items))
    ranks = np.zeros(len(hidden), dtype=np.int64)
    for c, (query, target) in enumerate(zip(queries, hidden)):
        if target not in index:
            continue
        p = position[index[target]]
        ahead = sum(1 for code in query if code in index and position[index[code]] < p)
        ranks[c] = p - ahead + 1 if p - ahead < k else 0
    return ranks


def observe(
    model: Model, splits: Sequence[tuple[int, list[str], set[str]]], depth: int = CALIBRATION_DEPTH
) -> tuple[Observations, Observations, Observations]:
    """What the model's answers (and popular items) to each query held: score, rank and whether it was bought.
    Fallback answers (popular items) are observed as popular ones only. With a re-ranker, also what its first
    stage alone answers to every query, its scores squashed as an answer the re-ranker leaves in the first stage's
    order carries them (such answers, to a few big baskets, are left out of the first: they read that curve)."""
    scores, ranks, bought = [], [], []
    first_scores, first_ranks, first_bought = [], [], []
    pop_ranks, pop_bought, pop_scores = [], [], []
    by_popularity = model.items.most_popular()
    popular = [model.items.codes[i] for i in by_popularity]
    # A popular item's score, as serving gives it: its popularity over the most popular item's.
    top = max(float(model.items.popularity[by_popularity[0]]), 1.0) if by_popularity else 1.0
    index, popularity = model.items.index, model.items.popularity
    first_stage = model.first_stage() if model.reranker is not None else None
    for _, query, rest in splits:
        answer = model.recommend(query, depth)
        if not answer.fallback and not model.first_stage_orders(model.items.rows(query)):
            for r, scored in enumerate(answer.items, 1):
                scores.append(scored.score)
                ranks.append(r)
                bought.append(scored.item.stock_code in rest)
        if first_stage is not None:
            alone = first_stage.recommend(query, depth)
            if not alone.fallback:
                first_scores.extend(squash(np.asarray([s.score for s in alone.items])).tolist())
                first_ranks.extend(range(1, len(alone.items) + 1))
                first_bought.extend(s.item.stock_code in rest for s in alone.items)
        asked = set(query)
        shown = []
        for code in popular:
            if code not in asked:
                shown.append(code)
                if len(shown) == depth:
                    break
        pop_ranks.extend(range(1, len(shown) + 1))
        pop_bought.extend(code in rest for code in shown)
        pop_scores.extend(popularity[index[code]] / top for code in shown)
    return tuple(
        Observations(np.asarray(s, dtype=np.float64), np.asarray(r, dtype=np.int64), np.asarray(b, dtype=bool))
        for s, r, b in (
            (scores, ranks, bought),
            (pop_scores, pop_ranks, pop_bought),
            (first_scores, first_ranks, first_bought),
        )
    )


def _iso(t: np.datetime64 | None) -> str | None:
    return None if t is None or np.isnat(t) else str(np.datetime64(t, "s"))


def assess(
    folder: Path,
    model_info: dict,
    held: HeldOut,
    seed: int = 0,
    progress: Callable[[str], None] = print,
    near: dict[str, list[int]] | None = None,
) -> tuple[dict | None, list[str]]:
    """Measure the model whose artifacts are in folder on the held-out baskets, and write calibration.json and
    holdout.json.gz beside them. Returns manifest["evaluation"] (None when no held-out basket has two products the
    model knows) and the names of the artifacts written. near: Annoy's answers for some codes, when the training
    already has them (recipe.build_model)."""
    started = time.perf_counter()
    model = open_model(lambda name: folder / name, "candidate", {"model": model_info})
    if near:
        model.prime({model.items.index[code]: found for code, found in near.items() if found})
    known = model.items.index
    order = sorted(range(len(held.basket_ids)), key=lambda b: held.basket_ids[b])
    baskets = [held.items[b] for b in order]
    cases = leave_one_out(baskets, known, seed)
    if not cases:
        progress(
            f"holdout: none of the {len(baskets):,} held-out baskets has two products the model knows: not measured"
        )
        return None, []
    queries = [q for _, q, _ in cases]
    hidden = [h for _, _, h in cases]
    ranks = answer_ranks(model, queries, hidden)
    popular = popularity_ranks(model, queries, hidden)
    splits = random_splits(baskets, known, seed + 1)[:CALIBRATION_QUERIES]
    model_obs, popular_obs, first_stage_obs = observe(model, splits)
    spec = calibration.fit(model_obs, popular_obs, len(splits), CALIBRATION_DEPTH, first_stage_obs)
    (folder / CALIBRATION).write_bytes(calibration.to_json(spec))
    stored = {
        "format": FORMAT,
        "protocol": PROTOCOL,
        "k": K,
        "seed": seed,
        "cutoff": _iso(held.cutoff),
        "cases": [
            {
                "basket": held.basket_ids[order[p]],
                "time": _iso(held.times[order[p]]),
                "query": q,
                "hidden": h,
                "rank": int(r),
            }
            for (p, q, h), r in zip(cases, ranks.tolist())
        ],
    }
    (folder / CASES).write_bytes(
        gzip.compress(json.dumps(stored, separators=(",", ":")).encode(), compresslevel=3, mtime=0)
    )
    evaluation = {
        "protocol": PROTOCOL,
        "cutoff": _iso(held.cutoff),
        "holdout_baskets": len(held.basket_ids),
        "cases": len(cases),
        "k": K,
        "model": hit_metrics(ranks),
        "popularity": hit_metrics(popular),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return evaluation, [CALIBRATION, CASES]


def describe(evaluation: dict | None) -> str:
    """One line of a version's held-out figures (for `make train` and `make versions`)."""
    if not evaluation:
        return "no held-out figures"
    m, p = evaluation["model"], evaluation["popularity"]
    since = f" since {evaluation['cutoff'][:10]}" if evaluation.get("cutoff") else ""
    return (
        f"HR@10 {m['hr']:.3f}, MRR@10 {m['mrr']:.3f} (popularity {p['hr']:.3f} / {p['mrr']:.3f}) on "
        f"{evaluation['cases']:,} held-out baskets{since}"
    )
