"""The served model: the answer's contract, what it learns, and swapping versions in a running process."""

import numpy as np
import pytest

from recommender.core.errors import ModelUnavailable
from recommender.core.storage import LocalStorage
from recommender.serving.model import ModelHolder, load_model
from recommender.tools import synthetic
from recommender.training.pipeline import train


@pytest.fixture(scope="module")
def default_model(tmp_path_factory):
    """A model trained on the default synthetic dataset (400 products with known complements)."""
    folder = tmp_path_factory.mktemp("default")
    data = folder / "default.csv"
    synthetic.write_csv(synthetic.DEFAULT, data)
    storage = LocalStorage(folder / "store")
    version = train(data, storage, progress=lambda _m: None).version
    return load_model(storage, version)


def test_answer_contract(default_model):
    items = default_model.items
    for size in (1, 3, 15, 200):
        basket = [items.codes[i] for i in range(0, 2 * size, 2)]
        for n in (1, 5, 10, 100):
            answer = default_model.recommend(basket, n)
            codes = [s.item.stock_code for s in answer.items]
            assert len(codes) == n
            assert len(set(codes)) == n and not set(codes) & set(basket)
            scores = [s.score for s in answer.items]
            assert scores == sorted(scores, reverse=True)
            assert answer.fallback is False and answer.unknown == []


def test_it_learns_complements(default_model):
    truth = synthetic.complements(synthetic.DEFAULT)
    items = default_model.items
    hits = total = 0
    for code in [items.codes[i] for i in items.most_popular()[:100]]:
        if not truth.get(code):
            continue
        top = [s.item.stock_code for s in default_model.recommend([code], 5).items]
        hits += bool(set(top) & truth[code])
        total += 1
    assert total > 50
    assert hits / total > 0.9, f"a true complement in the top 5 for only {hits}/{total} single-item baskets"


def test_teacup_gets_its_saucer(default_model):
    products = synthetic.product_range(synthetic.DEFAULT)
    tea = products[products.Family == 0]
    cup = tea[tea.Item == "TEACUP"].StockCode.iloc[0]
    saucer = tea[tea.Item == "SAUCER"].StockCode.iloc[0]
    assert saucer in [s.item.stock_code for s in default_model.recommend([cup], 5).items]


def test_unknown_and_duplicate_codes(default_model):
    code = default_model.items.codes[0]
    answer = default_model.recommend(["NOPE", code, f" {code} ", code, "NOPE2", " NOPE"], 5)
    assert answer.unknown == ["NOPE", "NOPE2"]  # each once, stripped, in the order given
    assert code not in [s.item.stock_code for s in answer.items]
    assert answer.items == default_model.recommend([code], 5).items  # repeats count once


def test_popularity_fallback(default_model):
    answer = default_model.recommend(["NOPE"], 3)
    assert answer.fallback is True
    assert [s.item.stock_code for s in answer.items] == [
        default_model.items.codes[i] for i in default_model.items.most_popular()[:3]
    ]


def test_few_items_give_everything_else(tmp_path):
    path = tmp_path / "small.csv"
    rows = ["InvoiceNo,StockCode,Description,CustomerID"]
    for inv, items in enumerate([(1, 2), (2, 3), (1, 3), (3, 4), (4, 5), (1, 5)]):
        rows += [f"{inv},{i}0,item {i},{inv % 2}" for i in items]
    path.write_text("\n".join(rows) + "\n")
    storage = LocalStorage(tmp_path / "s")
    model = load_model(storage, train(path, storage, progress=lambda _m: None).version)
    answer = model.recommend(["10", "20"], 10)
    assert sorted(s.item.stock_code for s in answer.items) == ["30", "40", "50"]


def test_same_basket_same_answer(default_model):
    basket = default_model.items.codes[10:20]
    first = default_model.recommend(basket, 20)
    assert all(default_model.recommend(list(reversed(basket)), 20).items == first.items for _ in range(3))


def test_holder_swaps_to_the_new_active_version(tmp_path, tiny_csv):
    storage = LocalStorage(tmp_path)
    now = [0.0]
    first = train(tiny_csv, storage, progress=lambda _m: None).version
    holder = ModelHolder(storage, poll_seconds=2, clock=lambda: now[0])
    assert holder.refresh().version == first
    second = train(tiny_csv, storage, progress=lambda _m: None).version
    assert not holder.due() and holder.current().version == first  # not looked at before the interval
    now[0] = 2.0
    assert holder.due()
    assert holder.refresh().version == second


def test_holder_keeps_serving_when_the_new_version_is_damaged(tmp_path, tiny_csv):
    storage = LocalStorage(tmp_path)
    first = train(tiny_csv, storage, progress=lambda _m: None).version
    holder = ModelHolder(storage, poll_seconds=0)
    holder.refresh()
    second = train(tiny_csv, storage, progress=lambda _m: None).version
    damaged = tmp_path / "models/versions" / second / "table_weight.npy"
    damaged.write_bytes(np.zeros(10, dtype=np.float32).tobytes())
    assert holder.refresh().version == first
    assert "damaged" in holder.error


def test_holder_without_any_model_explains(tmp_path):
    holder = ModelHolder(LocalStorage(tmp_path), poll_seconds=0)
    assert holder.refresh() is None
    with pytest.raises(ModelUnavailable, match="make train"):
        holder.current()


def test_load_refuses_damaged_artifacts(tmp_path, tiny_csv):
    storage = LocalStorage(tmp_path)
    version = train(tiny_csv, storage, progress=lambda _m: None).version
    (tmp_path / "models/versions" / version / "catalog.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="catalog.json is damaged"):
        load_model(storage, version)


def test_answer_cache_gives_the_same_answers(tmp_path, tiny_csv):
    storage = LocalStorage(tmp_path)
    version = train(tiny_csv, storage, progress=lambda _m: None).version
    cached, plain = load_model(storage, version, answer_cache=100), load_model(storage, version)
    codes = cached.items.codes
    for basket in ([codes[0]], [codes[1], codes[2]], [codes[2], codes[1]], [codes[0]]):
        assert cached.recommend(basket, 5).items == plain.recommend(basket, 5).items
    info = cached._answers.cache_info()
    assert (info.hits, info.misses) == (2, 2)  # order of the basket does not matter


def test_watcher_swaps_without_requests(tmp_path, tiny_csv):
    import threading
    import time

    storage = LocalStorage(tmp_path)
    train(tiny_csv, storage, progress=lambda _m: None)
    holder = ModelHolder(storage, poll_seconds=0.05, warm=True)
    holder.refresh()
    assert holder.current()._asked.all()  # warmed before serving
    stop = threading.Event()
    holder.watch(stop)
    assert not holder.due()  # requests leave the pointer to the watcher
    second = train(tiny_csv, storage, progress=lambda _m: None).version
    deadline = time.monotonic() + 5
    while holder.current().version != second:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    stop.set()


def test_watcher_backs_off_through_emfile_and_recovers(tmp_path, trained_folder, caplog):
    """Out of file descriptors (EMFILE), the watcher logs it once, polls less and less often while it lasts,
    says when it works again, and picks up what was activated meanwhile; the model in memory serves throughout."""
    import errno
    import logging
    import shutil
    import threading
    import time

    shutil.copytree(trained_folder, tmp_path / "data")
    calls: list[float] = []
    failing = threading.Event()

    class OutOfFiles(LocalStorage):
        def read(self, key: str) -> bytes:
            if failing.is_set():
                calls.append(time.monotonic())
                raise OSError(errno.EMFILE, "Too many open files")
            return super().read(key)

    holder = ModelHolder(OutOfFiles(tmp_path / "data"), poll_seconds=0.02)
    first = holder.refresh()
    failing.set()
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="recommender"):
        holder.watch(stop, max_backoff=0.3)
        time.sleep(1.5)
        failing.clear()
        deadline = time.monotonic() + 3
        while holder.error is not None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        stop.set()
    # Without backing off, 1.5 s of 20 ms polls would be some 75 failures, each logged with its traceback.
    assert 4 <= len(calls) <= 10, len(calls)
    assert max(b - a for a, b in zip(calls, calls[1:])) >= 0.25  # the waits grew to max_backoff
    failures = [r for r in caplog.records if "Too many open files" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.ERROR
    assert any("works again" in r.getMessage() for r in caplog.records)
    assert holder.current() is first
