"""Boosted trees scored without walking them, QuickScorer's way (Lucchese et al., SIGIR 2015), in a few numpy passes.

A row's exit leaf in a tree is the leftmost leaf that no split it fails rules out: every split the row goes right at
rules out its left subtree's leaves. Per feature, the splits on it are sorted by threshold; a row's value goes right
at exactly the splits whose threshold is below it, the first `rank` of them. So, computed once at load: per feature
and rank, each tree's bitmask of the leaves still open (one bit per leaf, left to right). At answer time: each
feature's rank by a branch-free binary search (every feature at once), a gather of those masks and an AND per
feature, and the lowest set bit of each tree's mask is its exit leaf. Leaves are the walk's exactly (the same
comparisons, missing values read as 0 as the walk does), so scores are bit-identical. Trees of more than 64 leaves
are not handled: `build` returns None and the walk scores them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_LARGEST = np.finfo(np.float64).max


@dataclass
class Bitvectors:
    """The masks and search tables of one set of trees (see the module's docstring)."""

    used: np.ndarray  # the features some split reads (the columns searched)
    bounds: np.ndarray  # float64, len(used) lanes of `width` sorted distinct thresholds, padded with +inf
    width: int  # a power of two above every feature's number of distinct thresholds
    shift: np.ndarray  # per lane: a rank's row in masks is lane position + shift
    masks: np.ndarray  # (rows, trees) uint32 or uint64: per feature, its ranks' open leaves in each tree
    leaf_value: np.ndarray  # float64, (trees x leaves) flat: the value of each tree's k-th leaf from the left
    leaf_node: np.ndarray  # intp, the same layout: its node number
    leaves_per_tree: int

    def exits(self, x: np.ndarray) -> np.ndarray:
        """Per row of x (rows x features) and tree, its exit leaf as tree * leaves_per_tree + leaf (from the left)."""
        # The walk reads a missing value as 0 (and infinities as the largest finite numbers): the same here.
        # Lane-major (a feature's values contiguous): the search's gathers and the masks' ANDs go lane by lane.
        values = np.asarray(x, dtype=np.float64).T[self.used]  # a copy (fancy index): changed in place below
        np.clip(values, -_LARGEST, _LARGEST, out=values)  # what nan_to_num does, in half its time
        values[np.isnan(values)] = 0.0
        lanes, n = values.shape
        at = np.repeat(np.arange(lanes, dtype=np.intp) * self.width, n).reshape(lanes, n)
        step = self.width // 2
        while step:  # at ends as lane start + the number of thresholds below the value
            at += (self.bounds[step - 1 :].take(at) < values) * step
            step //= 2
        at += self.shift[:, None]
        if lanes:  # AND each feature's masks in turn: small temporaries stay in cache (one gather of them all does not)
            open_ = self.masks.take(at[0], axis=0)
            for lane in at[1:]:
                open_ &= self.masks.take(lane, axis=0)
        else:  # every tree a single leaf
            open_ = np.full((n, self.masks.shape[1]), np.iinfo(self.masks.dtype).max, dtype=self.masks.dtype)
        lowest = open_ & (~open_ + open_.dtype.type(1))  # the lowest set bit alone: a power of two
        if open_.dtype == np.uint32:  # its exponent, read from the float it converts to exactly
            leaf = (lowest.astype(np.float32).view(np.int32) >> 23) - 127
        else:
            leaf = (lowest.astype(np.float64).view(np.int64) >> 52) - 1023
        leaf += np.arange(open_.shape[1], dtype=leaf.dtype) * self.leaves_per_tree
        return leaf

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The node each row of x reaches in each tree (as Trees.leaves)."""
        return self.leaf_node.take(self.exits(x))

    def score(self, x: np.ndarray) -> np.ndarray:
        """The raw score of each row of x: the leaves' values summed over the trees in order (as Trees.score)."""
        return self.leaf_value.take(self.exits(x)).sum(axis=1)


def build(feature: np.ndarray, threshold: np.ndarray, child: np.ndarray, value: np.ndarray, roots: np.ndarray):
    """The Bitvectors of trees in Trees' layout (node n goes to child[2n] when x <= threshold[n], else child[2n + 1];
    a leaf is its own children), or None when a tree has more than 64 leaves or there is none."""
    n_nodes, n_trees = len(feature), len(roots)
    if not n_trees:
        return None
    left, right = child[0::2], child[1::2]
    inner = left != np.arange(n_nodes)
    # Nodes level by level from the roots, with their trees (a level's children are the next level).
    levels, tree_of = [np.asarray(roots, dtype=np.intp)], np.zeros(n_nodes, dtype=np.intp)
    tree_of[roots] = np.arange(n_trees)
    while True:
        split = levels[-1][inner[levels[-1]]]
        if not len(split):
            break
        nxt = np.concatenate([left[split], right[split]])
        tree_of[left[split]] = tree_of[split]
        tree_of[right[split]] = tree_of[split]
        levels.append(nxt)
    count = np.ones(n_nodes, dtype=np.intp)  # leaves under each node, from the deepest level up
    for level in reversed(levels):
        split = level[inner[level]]
        count[split] = count[left[split]] + count[right[split]]
    width = int(count[roots].max())
    if width > 64:
        return None
    first = np.zeros(n_nodes, dtype=np.intp)  # the number (from the left, in its tree) of each node's first leaf
    for level in levels:
        split = level[inner[level]]
        first[left[split]] = first[split]
        first[right[split]] = first[split] + count[left[split]]
    dtype = np.uint32 if width <= 32 else np.uint64
    ones = np.iinfo(dtype).max
    leaf = np.flatnonzero(~inner)
    slot = tree_of[leaf] * width + first[leaf]
    leaf_value, leaf_node = np.zeros(n_trees * width), np.zeros(n_trees * width, dtype=np.intp)
    leaf_value[slot], leaf_node[slot] = value[leaf], leaf
    # A split that sends the row right closes the leaves of its left subtree.
    split = np.flatnonzero(inner)
    span = count[left[split]].astype(np.uint64)
    closed = ((np.uint64(1) << span) - np.uint64(1)) << first[split].astype(np.uint64)
    close = (np.uint64(ones) ^ closed).astype(dtype)
    used = np.unique(feature[split])
    distinct = [np.unique(threshold[split][feature[split] == f]) for f in used]
    lane_width = 1 << int(max(len(d) for d in distinct) if distinct else 0).bit_length()
    bounds = np.full((len(used), lane_width), np.inf)
    offsets = np.zeros(len(used), dtype=np.intp)
    row_of = np.zeros(len(split), dtype=np.intp)
    start = 0
    for j, (f, d) in enumerate(zip(used.tolist(), distinct)):
        bounds[j, : len(d)] = d
        offsets[j] = start
        mine = feature[split] == f
        row_of[mine] = start + 1 + np.searchsorted(d, threshold[split][mine])
        start += len(d) + 1
    masks = np.full((start, n_trees), ones, dtype=dtype)  # row 0 of each feature: every leaf open
    np.bitwise_and.at(masks, (row_of, tree_of[split]), close)
    for j, d in enumerate(distinct):  # rank r: the first r thresholds' splits all sent the row right
        seg = slice(offsets[j], offsets[j] + len(d) + 1)
        masks[seg] = np.bitwise_and.accumulate(masks[seg], axis=0)
    shift = offsets - np.arange(len(used), dtype=np.intp) * lane_width
    return Bitvectors(used, bounds.ravel(), lane_width, shift, masks, leaf_value, leaf_node, width)
