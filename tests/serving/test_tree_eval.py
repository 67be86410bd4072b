"""The trees scored by leaf bitmasks (serving/tree_eval.py) reach the walk's leaves and give its scores bit for bit,
and the link features read backwards equal those read forwards (serving/rerank_links.py)."""

from types import SimpleNamespace

import numpy as np
import pytest

from recommender.serving.csr import ranges
from recommender.serving.rerank_links import Incoming, link_features
from recommender.serving.reranker import Slots, Trees

CUTS = np.asarray([-1.5, -0.25, 0.0, 0.5, 1.0, 2.0, 7.0])  # few thresholds: shared by many splits, and rows hit them


def _random_trees(
    rng: np.random.Generator, n_trees: int, n_features: int, max_leaves: int, stop: float = 0.15
) -> Trees:
    """Random trees in Trees' layout (preorder, as training's export lays them out), some of a single leaf; with
    stop=0 each tree has exactly the leaves drawn."""
    feature, threshold, child, value, roots = [], [], [], [], []
    depth = 0

    def add(level: int, budget: int) -> tuple[int, int]:
        nonlocal depth
        at = len(feature)
        feature.append(0)
        threshold.append(np.inf)
        child.extend((at, at))
        value.append(float(rng.normal()))
        if budget < 2 or rng.random() < stop * level:
            depth = max(depth, level)
            return at, 1
        feature[at] = int(rng.integers(n_features))
        threshold[at] = float(rng.choice(CUTS)) if rng.random() < 0.7 else float(rng.normal())
        share = int(rng.integers(1, budget))
        left, used = add(level + 1, share)
        right, more = add(level + 1, budget - used)
        child[2 * at], child[2 * at + 1] = left, right
        return at, used + more

    for _ in range(n_trees):
        roots.append(add(0, int(rng.integers(1, max_leaves + 1)))[0])
    return Trees(
        np.asarray(feature, dtype=np.intp),
        np.asarray(threshold),
        np.asarray(child, dtype=np.intp),
        np.asarray(value),
        np.asarray(roots, dtype=np.intp),
        depth,
    )


def _rows(rng: np.random.Generator, n: int, n_features: int) -> np.ndarray:
    x = rng.normal(size=(n, n_features)) * 2
    on = rng.random(x.shape) < 0.3
    x[on] = rng.choice(CUTS, size=int(on.sum()))  # exactly at thresholds: ties go left, as in the walk
    x[rng.random(x.shape) < 0.05] = np.nan  # read as 0, as the walk does
    x[rng.random(x.shape) < 0.02] = np.inf
    x[rng.random(x.shape) < 0.02] = -np.inf
    return x


def _walk_score(trees: Trees, x: np.ndarray) -> np.ndarray:
    return trees.value.take(trees.leaves(x)).sum(axis=1)


@pytest.mark.parametrize("seed, max_leaves", [(0, 31), (1, 8), (2, 64), (3, 40)])
def test_bitmasks_reach_the_walks_leaves_and_scores(seed, max_leaves):
    rng = np.random.default_rng(seed)
    trees = _random_trees(rng, n_trees=60, n_features=9, max_leaves=max_leaves)
    assert trees.fast is not None
    assert trees.fast.masks.dtype == (np.uint32 if trees.fast.leaves_per_tree <= 32 else np.uint64)
    x = _rows(rng, 400, 9)
    assert np.array_equal(trees.fast.leaves(x), trees.leaves(x))
    assert np.array_equal(trees.score(x), _walk_score(trees, x))  # bit for bit, not within a tolerance
    assert np.array_equal(trees.score(x[:1]), _walk_score(trees, x[:1]))
    assert len(trees.score(x[:0])) == 0


def test_trees_of_single_leaves_and_of_too_many_leaves():
    rng = np.random.default_rng(5)
    stumps = _random_trees(rng, n_trees=4, n_features=3, max_leaves=1)
    x = _rows(rng, 20, 3)
    assert np.array_equal(stumps.score(x), _walk_score(stumps, x))
    big = _random_trees(rng, n_trees=3, n_features=4, max_leaves=200, stop=0.0)
    assert big.fast is None  # more than 64 leaves: scored by the walk
    x = _rows(rng, 50, 4)
    assert np.array_equal(big.score(x), _walk_score(big, x))


def test_stored_trees_rebuild_their_bitmasks():
    trees = _random_trees(np.random.default_rng(7), n_trees=20, n_features=5, max_leaves=31)
    again = Trees.from_arrays(trees.to_arrays())
    assert again.fast is not None
    x = _rows(np.random.default_rng(8), 100, 5)
    assert np.array_equal(again.score(x), trees.score(x))


def _table(rng: np.random.Generator, n_items: int):
    lengths = rng.integers(0, 40, size=n_items)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    target = np.concatenate([rng.choice(n_items, size=k, replace=False) for k in lengths]).astype(np.int32)
    return SimpleNamespace(
        table_indptr=indptr,
        table_target=target,
        table_weight=rng.random(len(target)).astype(np.float32),
        table_count=rng.integers(1, 500, size=len(target)).astype(np.int32),
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_links_read_backwards_equal_links_read_forwards(seed):
    rng = np.random.default_rng(seed)
    n_items = 300
    model = _table(rng, n_items)
    incoming = Incoming.of(model.table_indptr, model.table_target)
    pop1 = rng.integers(1, 1000, size=n_items).astype(np.float64)
    for size in (1, 5, 40, 200):
        basket = np.sort(rng.choice(n_items, size=size, replace=False))
        rest = np.setdiff1d(np.arange(n_items), basket)
        candidates = np.sort(rng.choice(rest, size=min(60, len(rest)), replace=False))
        positions = ranges(model.table_indptr, basket)
        slots = Slots(candidates, n_items)
        got = {}
        for way in (False, True):
            x = np.zeros((len(candidates), 23))
            link_features(model, basket, positions, slots, incoming, pop1, x, backwards=way)
            got[way] = x
        assert got[True][:, 3:9].any()
        assert np.array_equal(got[True], got[False])
