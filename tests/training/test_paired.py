"""The published model and the holdout model built together (training/paired.py) over dense grams
(training/dense_table.py): every file of the version, the measurement's included, byte for byte what the
straightforward path writes (each model on its own, the sparse item-item table, the SVD's products as before)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.tools import synthetic
from recommender.training import dense_table, embedding, engine, neighbors, paired, recipe
from recommender.training.ingest import load_transactions
from recommender.training.recipe import TrainingParams
from recommender.training.reranker import RerankParams


def reference_item_embeddings(matrix: sp.csr_matrix, k: int, seed: int, iterations: int = 4) -> np.ndarray:
    """recipe.item_embeddings as it was: X' as its own CSR copy."""
    x = matrix.astype(np.float64)
    xt = x.T.tocsr()

    def image_gram(q: np.ndarray) -> np.ndarray:
        y = x @ q
        return y.T @ y

    return recipe.embeddings_from_products(matrix.shape[1], k, seed, iterations, lambda q: xt @ (x @ q), image_gram)


def without_seconds(model: dict) -> dict:
    """The manifest's model part without the re-ranker's timing."""
    return {k: ({**v, "seconds": None} if k == "rerank" else v) for k, v in model.items()}


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def build(csv: Path, params: TrainingParams, folder: Path) -> engine.Built:
    said: list[str] = []
    built = engine.single_engine(load_transactions(csv), params, said.append)(folder)
    built.said = said  # type: ignore[attr-defined]
    return built


@pytest.fixture(scope="module")
def wider_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """More products than neighbours per item, and returning customers with held-out baskets."""
    path = tmp_path_factory.mktemp("paired") / "wider.csv"
    synthetic.write_csv(replace(synthetic.TINY, invoices=1200, products=260, customers=90), path)
    return path


# The tiny data shows no gain from a re-ranker: these settings give it trees anyway (tests/conftest.py's).
RERANKED = TrainingParams(
    rerank=RerankParams(days=60, min_baskets=20, min_queries=0, require_gain=False, min_data_in_leaf=5, max_rounds=40)
)


@pytest.mark.parametrize(
    "data, params",
    [
        ("tiny_csv", TrainingParams()),
        ("tiny_csv", TrainingParams(neighbors=6, factors=12)),
        ("wider_csv", TrainingParams()),
        ("wider_csv", TrainingParams(neighbors=6, factors=12)),
        ("tiny_csv", RERANKED),
    ],
    ids=["tiny", "tiny-few-neighbours", "wider", "wider-few-neighbours", "tiny-reranked"],
)
def test_the_paired_build_writes_the_same_bytes_as_two_separate_builds(request, data, params, tmp_path, monkeypatch):
    csv = request.getfixturevalue(data)
    paired_folder, separate_folder = tmp_path / "paired", tmp_path / "separate"
    paired_folder.mkdir()
    separate_folder.mkdir()
    calls = []
    original = paired.build_pair
    monkeypatch.setattr(paired, "build_pair", lambda *a, **k: calls.append(1) or original(*a, **k))
    fast = build(csv, params, paired_folder)
    assert calls, "the paired build ran"
    assert fast.evaluation is not None and fast.evaluation["measured"].startswith("a second model")
    assert any(line.startswith("co-occurrence: ") for line in fast.said)

    with monkeypatch.context() as m:  # the path before: sparse tables, one model after the other, the old SVD
        m.setattr(dense_table, "DENSE_MAX_ITEMS", 0)
        m.setattr(embedding, "item_embeddings", reference_item_embeddings)
        slow = build(csv, params, separate_folder)
    assert len(calls) == 1

    ours, theirs = files(paired_folder), files(separate_folder)
    assert set(ours) == set(theirs) >= {"index.ann", "table_weight.npy", "calibration.json", "holdout.json.gz"}
    assert ("rerank.npz" in ours) == params.rerank.enabled
    for name in theirs:
        assert ours[name] == theirs[name], name
    assert without_seconds(fast.model) == without_seconds(slow.model)
    timings = ("seconds", "model_seconds")
    assert {k: v for k, v in fast.evaluation.items() if k not in timings} == {
        k: v for k, v in slow.evaluation.items() if k not in timings
    }
    assert fast.period == slow.period


def test_dense_table_is_the_sparse_table_bit_for_bit():
    """Ties, items bought with fewer others than k, an item bought with nothing: the same neighbours, weights and
    counts."""
    rng = np.random.default_rng(3)
    rows = (rng.random((300, 40)) < rng.random(40) * 0.3).astype(np.float32)
    rows[:, 7] = 0
    rows[5] = 0
    rows[5, 7] = 1  # item 7: in one basket, alone
    x = sp.csr_matrix(rows)
    g = neighbors.gram(x)
    dense = dense_table.gram(x)
    for k in (3, 10, 39):
        ref = neighbors.top_neighbors(g, k)
        nbrs = dense_table.top_neighbors(dense, g.counts, k)
        assert np.array_equal(nbrs, ref)
        weights = dense_table.local_regression(dense, nbrs, lam=2.5, batch=7)
        assert weights.tobytes() == neighbors.local_regression(g, ref, lam=2.5).tobytes()
        small = dense_table.compact(dense)
        assert small.dtype == np.uint16
        assert np.array_equal(dense_table.top_neighbors(small, g.counts, k, block=5, rows=(3, 29)), ref[3:29])
        assert dense_table.local_regression(small, ref[3:29], 2.5, first=3).tobytes() == weights[3:29].tobytes()
        indptr, target, _ = neighbors.by_source(nbrs, weights)
        assert np.array_equal(dense_table.pair_counts(dense, indptr, target), neighbors.table_counts(x, indptr, target))
    assert (neighbors.top_neighbors(g, 3)[7] == -1).all()


def test_blocks_shared_by_two_threads_wait_for_the_last_block():
    """Two threads taking blocks of the table: wait() returns once the other thread's block is in, with the table
    computed whole; a block that fails is raised by wait() in the thread that waits."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(4)
    x = sp.csr_matrix((rng.random((400, 90)) < 0.1).astype(np.float32))
    g = dense_table.gram(x)
    counts = np.asarray(x.sum(axis=0)).ravel().astype(np.float64)
    nbrs = dense_table.top_neighbors(g, counts, 12)
    weights = dense_table.local_regression(g, nbrs, 2.0)
    blocks = dense_table.Blocks(g, counts, 12, 2.0, size=8)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(blocks.work)
        blocks.work()
        blocks.wait()
        assert blocks.left == 0
        assert np.array_equal(blocks.table()[0], nbrs) and blocks.table()[1].tobytes() == weights.tobytes()
        failing = dense_table.Blocks(g, counts, 12, 2.0, size=8)
        failing.lam = None  # the ridge's addition fails in the first block computed
        helper = pool.submit(failing.work)
        with pytest.raises(TypeError):
            failing.work()
        with pytest.raises(TypeError):
            failing.wait()
        with pytest.raises(TypeError):
            helper.result()


def test_customer_histories_are_split_as_multisets():
    a = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=np.float32))
    b = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [0, 1, 1], [1, 1, 1]], dtype=np.float32))
    both, only_a, only_b = paired._split_histories(a, b)
    assert both.toarray().tolist() == [[1, 1, 0], [0, 1, 1]]
    assert only_a.toarray().tolist() == [[1, 1, 0], [1, 0, 1]]
    assert only_b.toarray().tolist() == [[0, 1, 1], [1, 1, 1]]
    assert paired._split_histories(None, b) == (None, None, b)


def test_one_model_over_the_dense_table_writes_the_same_bytes(wider_csv, tmp_path, monkeypatch):
    """HOLDOUT=0 (and every build_model call: a small holdout's model, the re-ranker's validation models): the
    table split in blocks between the two threads, byte for byte the sparse path's."""
    params = TrainingParams(holdout=None)
    dense_folder, sparse_folder = tmp_path / "dense", tmp_path / "sparse"
    dense_folder.mkdir()
    sparse_folder.mkdir()
    blocks = []
    original = dense_table.Blocks.work
    monkeypatch.setattr(dense_table.Blocks, "work", lambda self: blocks.append(1) or original(self))
    fast = build(wider_csv, params, dense_folder)
    assert len(blocks) == 2  # this thread and the one that built the index
    with monkeypatch.context() as m:
        m.setattr(dense_table, "DENSE_MAX_ITEMS", 0)
        m.setattr(embedding, "item_embeddings", reference_item_embeddings)
        slow = build(wider_csv, params, sparse_folder)
    assert len(blocks) == 2 and fast.evaluation is None and fast.model == slow.model
    assert files(dense_folder) == files(sparse_folder)


def test_the_one_pass_product_is_scipys():
    """X'X without scipy's sizing pass: the same entries as X.T @ X (rows of every length, an empty row, a
    matrix with int64 indices through scipy's own product), and nothing for no rows."""
    rng = np.random.default_rng(5)
    rows = (rng.random((200, 60)) < rng.random((200, 1)) * 0.5).astype(np.float32)
    rows[3] = 0
    x = sp.csr_matrix(rows)
    expected = (x.T @ x).toarray()
    assert dense_table.product(x).toarray().tobytes() == expected.tobytes()
    assert dense_table.gram(x).tobytes() == expected.tobytes()
    wide = sp.csr_matrix((x.data, x.indices.astype(np.int64), x.indptr.astype(np.int64)), shape=x.shape)
    assert dense_table.product(wide).toarray().tobytes() == expected.tobytes()
    assert dense_table.product(x[:0]) is None and dense_table.product(None) is None
    g = np.ones((60, 60), dtype=np.float32)
    dense_table.add(g, dense_table.product(x[:1]))
    assert np.array_equal(g, 1 + np.outer(rows[0], rows[0]))
