"""Products the model never saw, placed from the product feed by the known items they resemble (serving/new_items.py),
on the tiny synthetic data's launches (tools/synthetic/launches.py: their complements are known by design)."""

import csv
import io
import threading
import time
import zipfile

import numpy as np
import pytest

from recommender.core import registry
from recommender.core.resemblance import RESEMBLANCE_FILE, TextIndex, terms
from recommender.core.storage import LocalStorage
from recommender.serving import new_items, schemas
from recommender.serving.merchandising import Options, Policy, Scores
from recommender.serving.model import ModelHolder, load_model
from recommender.tools import synthetic
from recommender.tools.new_items_evaluation import with_feed
from recommender.tools.synthetic.launches import feed_rows, launches
from recommender.training.feed import publish_feed

SPEC = synthetic.TINY


@pytest.fixture(scope="module")
def plain(trained_folder):
    storage = LocalStorage(trained_folder)
    return load_model(storage, registry.active_version(storage))


@pytest.fixture(scope="module")
def launched():
    return launches(SPEC, 10)


@pytest.fixture(scope="module")
def served(plain, launched):
    return with_feed(plain, feed_rows(SPEC, launched))


def family(code):
    products = synthetic.product_arrays(SPEC)
    return dict(zip(products.code.tolist(), products.family_of.tolist())).get(code)


def test_the_resemblance_index_is_stored_with_the_model_and_reads_back(plain, trained_folder):
    manifest = registry.read_manifest(LocalStorage(trained_folder), plain.version)
    assert RESEMBLANCE_FILE in manifest["artifacts"]
    index = plain.resemblance()
    built = TextIndex.build(plain.items.descriptions)
    text = plain.items.descriptions[0]
    assert np.allclose(index.similarity(text, len(plain.items)), built.similarity(text, len(plain.items)), atol=1e-6)
    assert index.similarity("ZZZ QQQ", len(plain.items)) is None  # no known word: nothing resembles it
    # No timestamp in the stored bytes: a retraining of the same file stores the same artifact.
    stored = zipfile.ZipFile(io.BytesIO(built.to_bytes()))
    assert {i.date_time for i in stored.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert np.argmax(index.similarity(text, len(plain.items))) == 0  # an item is most like itself
    assert terms("White hanging heart T-LIGHT holder, 12") == [
        "WHITE",
        "HANGING",
        "HEART",
        "T-LIGHT",
        "LIGHT",
        "HOLDER",
    ]


def test_launches_are_placed_by_text_and_category_among_their_family(plain, served, launched):
    assert len(served.items) == len(plain.items) + len(launched)
    found = []
    for launch in launched:
        row = served.items.index[launch.code]
        twins = served.placement.twins[row - served.first_new]
        assert family(served.items[int(twins[0])].stock_code) == launch.family, launch.title
        answer = served.recommend([launch.code], 10, Options(explain=True))
        assert not answer.unknown and not answer.fallback
        known = {c for c in launch.complements if c in plain.items.index}
        top = {p.item.stock_code for p in answer.items}
        found.append(len(top & known) / min(10, len(known)))
    assert np.mean(found) >= 0.8  # today: the launch is unknown, the answer is the popular fallback


def test_the_category_decides_between_equally_worded_products(plain):
    feed = feed_rows(SPEC, [])
    # Words every kit shares (a design) and nothing else: the feed's category says which kit it belongs to.
    target = next(code for code, a in feed.items() if a["category"] != feed[plain.items.codes[0]]["category"])
    design = " ".join(feed[target]["title"].split()[:1])
    feed["NEWBIE"] = {"title": design, "category": feed[target]["category"], "availability": "in_stock"}
    view = with_feed(plain, feed)
    twins = view.placement.twins[view.items.index["NEWBIE"] - view.first_new]
    assert all(feed[view.items[int(t)].stock_code]["category"] == feed[target]["category"] for t in twins if t >= 0)


def test_a_launch_is_recommended_with_its_twins_partners_and_says_why(served, launched, plain):
    shown = []
    for launch in launched:
        known = sorted((c for c in launch.complements if c in plain.items.index), key=plain.items.index.get)
        answer = served.recommend([known[0]], 10, Options(explain=True))
        picks = [p for p in answer.items if p.item.stock_code == launch.code]
        shown.append(bool(picks))
        if picks:
            out = schemas.ItemOut.model_validate(schemas.item_json(picks[0], True))
            assert out.source == "new" and out.like.stock_code in plain.items.index
            assert out.reason.startswith(f"new, like {out.like.description}, which ")
    assert np.mean(shown) >= 0.5


def test_a_new_product_out_of_stock_is_never_recommended(plain, launched):
    feed = feed_rows(SPEC, launched)
    for launch in launched:
        feed[launch.code]["availability"] = "out_of_stock"
    view = with_feed(plain, feed)
    for code in plain.items.codes:
        for options in (Options(), Options(explain=True, max_per_category=1)):
            answer = view.recommend([code], 20, options)
            assert not any(p.source == "new" for p in answer.items)
    # ... but it still places the basket it is in.
    answer = view.recommend([launched[0].code], 5, Options())
    assert not answer.unknown and not answer.fallback


def test_baskets_reaching_no_new_product_answer_as_before(plain, launched):
    feed = feed_rows(SPEC, launched)
    without = plain.with_policy(Policy(plain.items, plain.item_price, {"items": feed_rows(SPEC, [])}, None, "f", None))
    view = with_feed(plain, feed)
    rng = np.random.default_rng(0)
    same = 0
    for _ in range(60):
        basket = rng.choice(len(plain.items), size=int(rng.integers(1, 4)), replace=False)
        codes = [plain.items.codes[i] for i in basket]
        rows = np.sort(basket).astype(np.int64)
        # Every known item's score is the same to the last bit.
        every = np.arange(len(plain.items))
        assert np.array_equal(Scores(view, rows)(every), Scores(plain, rows)(every))
        before = without.recommend(codes, 10, Options())
        after = view.recommend(codes, 10, Options())
        if not any(p.source == "new" for p in after.items):
            assert [(p.item, p.score) for p in after.items] == [(p.item, p.score) for p in before.items]
            same += 1
        else:  # at most NEW_PER_ANSWER new products, the rest in the same order
            rest = [p.item for p in after.items if p.source != "new"]
            assert sum(p.source == "new" for p in after.items) <= new_items.NEW_PER_ANSWER
            assert rest == [p.item for p in before.items][: len(rest)]
    assert same > 0


def test_a_feed_upload_serves_a_new_product_without_retraining(trained_storage, tmp_path, launched, plain):
    holder = ModelHolder(trained_storage, poll_seconds=0.05)
    model = holder.refresh()
    launch = launched[0]
    assert model.recommend([launch.code], 5).unknown == [launch.code]
    path = tmp_path / "feed.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "title", "description", "product_type", "price", "availability"])
        for code, a in feed_rows(SPEC, [launch]).items():
            writer.writerow([code, a["title"], "", a["category"], a["price"], a["availability"]])
    stop = threading.Event()
    holder.watch(stop)
    try:
        publish_feed(trained_storage, path, progress=lambda _m: None)
        started = time.monotonic()
        while holder.current().feed_version is None and time.monotonic() - started < 10:
            time.sleep(0.01)
        waited = time.monotonic() - started
    finally:
        stop.set()
    served = holder.current()
    assert served.version == model.version and waited < 2  # the same model: no retraining, within the poll
    answer = served.recommend([launch.code], 5)
    assert not answer.unknown and not answer.fallback
    known = sorted((c for c in launch.complements if c in plain.items.index), key=plain.items.index.get)
    body = schemas.answer_json(served.recommend([known[0]], 10, Options(explain=True)), True)
    assert any(item["source"] == "new" and item["stock_code"] == launch.code for item in body["items"])


def test_with_the_learned_re_ranker_new_products_take_their_first_stage_place(reranked_folder, launched):
    storage = LocalStorage(reranked_folder)
    plain = load_model(storage, registry.active_version(storage))
    assert plain.reranker is not None
    view = with_feed(plain, feed_rows(SPEC, launched))
    shown, found = [], []
    for launch in launched:
        known = sorted((c for c in launch.complements if c in plain.items.index), key=plain.items.index.get)
        answer = view.recommend([launch.code], 10, Options(explain=True))
        found.append(len({p.item.stock_code for p in answer.items} & set(known)) / min(10, len(known)))
        answer = view.recommend([known[0], launch.code], 10, Options(explain=True))  # known and new: both placed
        assert not answer.unknown and all(p.item.stock_code != launch.code for p in answer.items)
        picks = view.recommend([known[0]], 10, Options(explain=True)).items
        new = [p for p in picks if p.source == "new"]
        shown.append(any(p.item.stock_code == launch.code for p in new))
        assert all(p.ranked_by is None and p.like is not None for p in new)
        assert [p.score for p in picks] == sorted((p.score for p in picks), reverse=True)
    assert np.mean(found) >= 0.8 and np.mean(shown) >= 0.5
