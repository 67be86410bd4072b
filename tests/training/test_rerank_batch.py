"""The re-ranker's training features computed for many queries at once equal serving's, one basket at a time, bit
for bit: on baskets of every size (the kNN features' read budget binding), across chunk boundaries, with items
without a price or a description."""

import numpy as np
import pytest

from recommender.core import registry
from recommender.core.storage import LocalStorage
from recommender.serving import strongest
from recommender.serving.model import load_model
from recommender.training import reranker as training_reranker

pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def model(reranked_folder):
    storage = LocalStorage(reranked_folder)
    return load_model(storage, registry.active_version(storage))


def _served(model, codes: list[str], bounded: bool = True) -> np.ndarray:
    """Serving's feature rows for a basket, as Model.recommend computes them (bounded=False: from every table entry
    of a big basket's items)."""
    rows = np.asarray(sorted({model.items.index[c] for c in codes}), dtype=np.int64)
    candidates, scores, positions = model.score_basket(rows, bounded)
    _final, reranked = model.final_scores(rows, candidates, scores[candidates], positions)
    return reranked.features


@pytest.mark.parametrize("budget", [None, 60])
def test_batched_training_features_equal_servings_basket_by_basket(model, monkeypatch, budget):
    if budget is not None:  # serving bounds the bigger baskets' first stage; training reads every entry still
        monkeypatch.setattr(strongest, "BUDGET", budget)
    rng = np.random.default_rng(3)
    codes = model.items.codes
    cases = []
    for size in [1, 1, 2, 3, 5, 8, 13, 21, 40, len(codes) - 1] * 4:
        picked = rng.choice(len(codes), min(size + 1, len(codes)), replace=False)
        cases.append((len(cases), [codes[i] for i in picked[1:]], codes[picked[0]]))
    rr = model.rerank_tables
    # items without a price or a description, as a real catalogue has
    monkeypatch.setattr(rr, "price", np.where(np.arange(len(rr.price)) % 3 == 0, np.nan, rr.price))
    no_words = np.arange(len(rr.word_ptr) - 1) % 4 == 0
    lengths = np.where(no_words, 0, np.diff(rr.word_ptr))
    keep = np.repeat(~no_words, np.diff(rr.word_ptr))
    monkeypatch.setattr(rr, "word_idx", rr.word_idx[keep])
    monkeypatch.setattr(rr, "word_val", rr.word_val[keep])
    monkeypatch.setattr(rr, "word_ptr", np.concatenate([[0], np.cumsum(lengths)]))
    # a smaller budget makes big baskets read a capped share of each item's postings (still more rows than the
    # nearest kept: the top-k path)
    monkeypatch.setattr(rr.sessions, "budget", 400)
    monkeypatch.setattr(rr.customers, "budget", 100)
    monkeypatch.setattr(training_reranker, "CHUNK", 7)  # queries split over several passes
    batched = training_reranker.training_rows(model, cases)
    served = [_served(model, query, bounded=False) for _b, query, _hidden in cases]
    if budget is not None:  # the budget binds: serving's big baskets read fewer entries
        assert any(not np.array_equal(_served(model, q), s) for (_b, q, _h), s in zip(cases, served))
    assert len(batched.found) == len(cases)
    assert np.array_equal(batched.x, np.vstack(served))
    sizes = np.bincount(batched.query, minlength=len(cases))
    assert sizes.tolist() == [len(s) for s in served]
    assert batched.x[:, 14].min() < 0 < batched.x[:, 14].max()  # prices were compared
    assert (batched.x[:, 15] == 0).any() and (batched.x[:, 15] > 0).any()
