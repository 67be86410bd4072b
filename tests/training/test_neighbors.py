"""The item-item table's pieces on a random binary matrix, checked against dense numpy; whole and by blocks of
source items (the Spark engine's unit of work), with blocks smaller than the model's items."""

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.training import neighbors


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(3)
    x = sp.csr_matrix((rng.random((300, 40)) < 0.12).astype(np.float32))
    g = neighbors.gram(x, block=16)
    nbrs = neighbors.top_neighbors(g, 8)
    weights = neighbors.local_regression(g, nbrs, lam=2.0)
    indptr, target, _weight = neighbors.by_source(nbrs, weights)
    return x, g, nbrs, indptr, target


def test_gram_is_x_transpose_x(table):
    x, g, *_ = table
    dense = np.zeros(g.shape, dtype=np.float32)
    for r in range(g.shape[0]):
        dense[r, g.indices[g.indptr[r] : g.indptr[r + 1]]] = g.data[g.indptr[r] : g.indptr[r + 1]]
    assert np.array_equal(dense, (x.T @ x).toarray())
    assert np.array_equal(g.counts, np.asarray(x.sum(axis=0)).ravel())


def test_reason_counts_whole_and_by_blocks_of_sources(table):
    x, g, _nbrs, indptr, target = table
    co = (x.T @ x).toarray()
    source = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    expected = co[source, target].astype(np.int32)
    assert np.array_equal(neighbors.counts_from_gram(g, indptr, target), expected)
    assert np.array_equal(neighbors.table_counts(x, indptr, target, block=7), expected)
    # As the Spark engine counts them: a block of source rows of the gram, the table's entries of those sources.
    for lo in range(0, 40, 16):
        hi = min(40, lo + 16)
        block = neighbors.Gram(
            g.indptr[lo : hi + 1] - g.indptr[lo],
            g.indices[g.indptr[lo] : g.indptr[hi]],
            g.data[g.indptr[lo] : g.indptr[hi]],
            g.counts,
        )
        found = neighbors.counts_from_gram(block, indptr[lo : hi + 1] - indptr[lo], target[indptr[lo] : indptr[hi]])
        assert np.array_equal(found, expected[indptr[lo] : indptr[hi]])


def test_top_neighbors_of_a_block_are_the_whole_table_s_rows(table):
    _x, g, nbrs, *_ = table
    lo, hi = 16, 32
    block = neighbors.Gram(
        g.indptr[lo : hi + 1] - g.indptr[lo],
        g.indices[g.indptr[lo] : g.indptr[hi]],
        g.data[g.indptr[lo] : g.indptr[hi]],
        g.counts,
        start=lo,
    )
    assert np.array_equal(neighbors.top_neighbors(block, 8), nbrs[lo:hi])


@pytest.mark.parametrize("n", [50, 70_000])  # item numbers in 16 bits (a radix sort) and wider
def test_by_source_orders_by_source_then_target(n):
    rng = np.random.default_rng(n)
    nbrs = np.stack([rng.choice(n, 6, replace=False) for _ in range(n)]).astype(np.int32)
    nbrs[rng.random(nbrs.shape) < 0.2] = -1  # padding
    weights = rng.standard_normal(nbrs.shape).astype(np.float32)
    weights[rng.random(nbrs.shape) < 0.1] = 0.0  # dropped like padding
    ok = (nbrs >= 0) & (weights != 0)
    source, target = nbrs[ok], np.nonzero(ok)[0]
    order = np.lexsort((target, source))
    indptr, by_target, by_weight = neighbors.by_source(nbrs, weights)
    assert np.array_equal(by_target, target[order]) and np.array_equal(by_weight, weights[ok][order])
    assert np.array_equal(np.diff(indptr), np.bincount(source, minlength=n))
