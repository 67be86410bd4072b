"""Merchandising at answer time on the tiny synthetic data (complements known): feed, every rule, every option,
full answers under heavy filtering, and exact reasons (shares summing to 1, baskets counted directly)."""

import math
import warnings

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender.core import registry
from recommender.core.errors import InvalidInput
from recommender.core.feed_and_rules import MAX_RULE_FACTOR, MIN_RULE_FACTOR
from recommender.core.storage import LocalStorage
from recommender.serving import schemas
from recommender.serving.merchandising import Merchandiser, Options, Policy
from recommender.serving.model import load_model
from recommender.tools import synthetic
from recommender.training.ingest import load_transactions


@pytest.fixture(scope="module", params=["first stage", "re-ranked"])
def plain(request):
    """The tiny model, ranked by its first stage alone and with a learned re-ranker: every rule, filter, reason and
    confidence test holds for both."""
    storage = LocalStorage(
        request.getfixturevalue("trained_folder" if request.param == "first stage" else "reranked_folder")
    )
    model = load_model(storage, registry.active_version(storage))
    assert (model.reranker is not None) == (request.param == "re-ranked")
    return model


@pytest.fixture(scope="module")
def products():
    return synthetic.product_range(synthetic.TINY).set_index("StockCode")


@pytest.fixture(scope="module")
def feed(products):
    """Every product with its kit as category (under Home), a brand per family, and its synthetic price."""
    return {
        "items": {
            code: {
                "category": f"Home > {row.Kit.title()}",
                "brand": f"Brand{row.Family % 3}",
                "price": round(float(row.UnitPrice), 2),
                "availability": "in_stock",
            }
            for code, row in products.iterrows()
        }
    }


def kit(products, code):
    """The product's kit as its feed category says it (None for codes outside the synthetic product range)."""
    return products.Kit.get(code, "").title() or None


def brand(products, code):
    return f"Brand{products.Family[code] % 3}" if code in products.index else None


def no_rules(**changes):
    rules = {"block": {"codes": [], "categories": [], "brands": []}, "do_not_pair": [], "pin": [], "boost": []}
    rules.update(changes)
    return rules


def view(model, feed=None, rules=None):
    return model.with_policy(
        Policy(model.items, model.item_price, feed, rules, "f1" if feed else None, "r1" if rules else None)
    )


def codes(answer):
    return [p.item.stock_code for p in answer.items]


def anchors(model, count=20):
    return [model.items.codes[i] for i in model.items.most_popular()[:count]]


def test_no_feed_no_rules_no_options_is_the_plain_answer(plain, feed):
    for code in anchors(plain):
        assert codes(view(plain).recommend([code], 10)) == codes(plain.recommend([code], 10))
        # A feed that changes nothing about eligibility keeps the same items in the same order.
        assert codes(view(plain, feed).recommend([code], 10)) == codes(plain.recommend([code], 10))


def test_out_of_stock_is_never_recommended_and_the_answer_stays_full(plain, feed):
    code = anchors(plain)[0]
    first = codes(plain.recommend([code], 10))
    out = {
        **feed["items"],
        first[0]: {**feed["items"][first[0]], "availability": "out_of_stock"},
        first[3]: {"availability": "out_of_stock"},
    }
    answer = view(plain, {"items": out}).recommend([code], 10)
    assert first[0] not in codes(answer) and first[3] not in codes(answer) and len(answer.items) == 10
    assert codes(answer)[:2] == [first[1], first[2]] and not answer.exhausted
    for basket in anchors(plain):
        assert first[0] not in codes(view(plain, {"items": out}).recommend([basket], 30))


def test_block_codes_categories_and_brands(plain, feed, products):
    code = anchors(plain)[0]
    first = codes(plain.recommend([code], 10))
    kit_name, brand_name = kit(products, first[1]), brand(products, first[2])
    assert kit_name and brand_name
    rules = no_rules(block={"codes": [first[0]], "categories": [kit_name], "brands": [brand_name]})
    for basket in anchors(plain):
        got = codes(view(plain, feed, rules).recommend([basket], 10))
        assert len(got) == 10 and first[0] not in got
        assert not [c for c in got if kit(products, c) == kit_name]
        assert not [c for c in got if brand(products, c) == brand_name]


def test_do_not_pair_removes_the_right_side_only_with_the_left_side_in_the_basket(plain, feed, products):
    truth = synthetic.complements(synthetic.TINY)
    code = next(c for c in anchors(plain) if truth[c])
    kit_name = kit(products, code)
    same_kit = set(products.index[products.Kit.str.title() == kit_name])
    assert set(codes(plain.recommend([code], 5))) & truth[code]  # its complements come first without the rule
    rules = no_rules(do_not_pair=[{"basket": {"category": [kit_name]}, "item": {"category": [kit_name]}}])
    paired = view(plain, feed, rules)
    got = codes(paired.recommend([code], 10))
    assert len(got) == 10 and not set(got) & same_kit
    other = next(c for c in anchors(plain) if kit(products, c) not in (kit_name, None))
    assert codes(paired.recommend([other], 10)) == codes(plain.recommend([other], 10))


def test_pin_puts_its_item_at_its_position(plain, feed):
    code = anchors(plain)[0]
    plain_codes = codes(plain.recommend([code], 10))
    far = next(c for c in reversed(plain.items.codes) if c not in plain_codes and c != code)
    rules = no_rules(
        pin=[
            {"basket": {"code": [code]}, "item": {"code": [far]}, "position": 3},
            {"basket": {"code": [code]}, "item": {"code": [plain_codes[0]]}, "position": 5},
        ]
    )
    answer = view(plain, feed, rules).recommend([code], 10, Options(explain=True))
    got = codes(answer)
    assert len(got) == 10 and got[2] == far and got[4] == plain_codes[0]
    assert answer.items[2].source == "pinned" and answer.items[0].source == "model"
    assert got[:2] == plain_codes[1:3]
    # A pinned item still obeys the request's filters, and the basket must hold the trigger.
    assert far not in codes(view(plain, feed, rules).recommend([code], 10, Options(exclude=(far,))))
    other = anchors(plain)[2]
    assert codes(view(plain, feed, rules).recommend([other], 10)) == codes(plain.recommend([other], 10))


def test_boost_and_bury_multiply_scores(plain, feed):
    code = anchors(plain)[0]
    base = plain.recommend([code], 10).items
    up, down = base[5].item.stock_code, base[0].item.stock_code
    rules = no_rules(boost=[{"code": [up], "factor": 100.0}, {"code": [down], "factor": 0.01}])
    answer = view(plain, feed, rules).recommend([code], 10, Options(explain=True))
    got = {p.item.stock_code: p for p in answer.items}
    assert codes(answer)[0] == up and got[up].boost == 100.0
    assert got[up].score == pytest.approx(base[5].score * 100, rel=1e-2)
    assert down not in got or codes(answer).index(down) > 0
    scores = [p.score for p in answer.items]
    assert scores == sorted(scores, reverse=True)


def test_request_filters(plain, feed, products):
    model = view(plain, feed)
    for code in anchors(plain, 10):
        if code not in feed["items"]:
            continue
        price = feed["items"][code]["price"]
        name = kit(products, code)
        cases = {
            Options(exclude=tuple(codes(plain.recommend([code], 3)))): lambda c: True,
            Options(categories=(name,)): lambda c: kit(products, c) == name,
            Options(categories=("home > " + name.lower(),)): lambda c: kit(products, c) == name,
            Options(exclude_categories=(name,)): lambda c: kit(products, c) != name,
            Options(price_min=1.0, price_max=3.0): lambda c: 1.0 <= feed["items"][c]["price"] <= 3.0,
            Options(max_price_ratio=1.0): lambda c: feed["items"][c]["price"] <= price,
        }
        for options, holds in cases.items():
            answer = model.recommend([code], 10, options)
            got = codes(answer)
            assert all(holds(c) for c in got), (options, got)
            assert len(got) == 10 or answer.exhausted
            assert not set(options.exclude) & set(got)


def test_max_per_category(plain, feed, products):
    model = view(plain, feed)
    for code in anchors(plain, 10):
        got = codes(model.recommend([code], 10, Options(max_per_category=2)))
        kits = [kit(products, c) for c in got if kit(products, c)]
        assert len(got) == 10 and max(kits.count(k) for k in kits) <= 2


def test_always_full_under_heavy_filtering_else_exhausted(plain, feed, products):
    model = view(plain, feed)
    code = anchors(plain)[0]
    other = next(k for k in products.Kit.str.title().unique() if k != kit(products, code))
    members = [c for c in products.index[products.Kit.str.title() == other] if c in plain.items.index]
    # Every member of another kit is eligible; asked for exactly that many, all come back: model picks first
    # (deeper candidates included), then popular ones passing the same filter.
    answer = model.recommend([code], len(members), Options(categories=(other,), explain=True))
    assert sorted(codes(answer)) == sorted(members) and not answer.exhausted
    scores = [p.score for p in answer.items]
    assert scores == sorted(scores, reverse=True)
    assert {p.source for p in answer.items} <= {"model", "popular"}
    more = model.recommend([code], len(members) + 3, Options(categories=(other,)))
    assert sorted(codes(more)) == sorted(members) and more.exhausted
    nothing = model.recommend([code], 5, Options(price_min=1e6))
    assert nothing.items == [] and nothing.exhausted
    # An empty basket: popular items that pass the filter.
    fallback = model.recommend([], 3, Options(categories=(other,)))
    assert fallback.fallback and len(fallback.items) == 3 and set(codes(fallback)) <= set(members)


def test_contradictions_are_refused():
    with pytest.raises(InvalidInput, match="price_min .* greater than price_max"):
        Options(price_min=5, price_max=2)
    with pytest.raises(InvalidInput, match="max_price_ratio"):
        Options(max_price_ratio=-1)


def test_shares_sum_to_one_and_baskets_are_true_counts(plain, tiny_csv):
    # The published model learns from every basket of the file (a second model is the one measured on the most
    # recent ones).
    tx = load_transactions(tiny_csv)
    invoices: dict[str, set[int]] = {}
    for b, i in zip(tx.pair_basket.tolist(), tx.pair_item.tolist()):
        invoices.setdefault(tx.item_codes[i], set()).add(b)
    checked = 0
    for size in (1, 2, 4):
        for start in range(0, 30, 3):
            basket = [plain.items.codes[(start + k * 7) % len(plain.items)] for k in range(size)]
            for pick in plain.recommend(basket, 10, Options(explain=True)).items:
                because = pick.because.as_list()
                if pick.source != "model" or not because:
                    continue
                assert sum(r["share"] for r in because) == pytest.approx(1.0, abs=1e-9)
                assert {r["stock_code"] for r in because} <= set(basket)
                for r in because:
                    both = len(invoices[r["stock_code"]] & invoices[pick.item.stock_code])
                    assert r["baskets"] == both
                    checked += 1
    assert checked > 50


def test_feed_and_rules_follow_their_pointers(trained_storage, feed):
    plain = load_model(trained_storage, registry.active_version(trained_storage))
    follower = Merchandiser(trained_storage)
    assert follower.view(plain, None) is plain
    publish = registry.publish_files(trained_storage, {"feed.json": b'{"items": {}}'}, {}, registry.FEED)
    registry.activate(trained_storage, publish["version"], kind=registry.FEED)
    served = follower.view(plain, plain)
    assert served.feed_version == publish["version"] and served.rules_version is None
    assert follower.view(plain, served) is served  # nothing moved: the same snapshot
    damaged = registry.publish_files(trained_storage, {"feed.json": b"{"}, {}, registry.FEED)
    registry.activate(trained_storage, damaged["version"], kind=registry.FEED)
    assert follower.view(plain, served) is served  # unreadable: the feed in force stays
    assert "cannot be read" in follower.errors["feed"]


def test_confidence_and_min_confidence(plain):
    code = anchors(plain)[0]
    answer = plain.recommend([code], 10, Options(explain=True))
    confidence = [p.confidence for p in answer.items]
    assert all(0 <= c <= 1 for c in confidence) and confidence == sorted(confidence, reverse=True)
    threshold = confidence[4]
    kept = plain.recommend([code], 10, Options(min_confidence=threshold))
    assert [p.item.stock_code for p in kept.items] == codes(answer)[: len(kept.items)]
    assert len(kept.items) >= 5 and all(p.confidence >= threshold for p in kept.items)
    assert plain.recommend([code], 10, Options(min_confidence=1.0)).exhausted


def test_many_items_path_gives_the_same_answers(plain, feed, products, monkeypatch):
    """Beyond DENSE_ITEMS, scores and eligibility are kept for the rows reached only: the answers must not change."""
    from recommender.serving import merchandising

    code = anchors(plain)[0]
    rules = no_rules(
        block={"codes": [codes(plain.recommend([code], 3))[1]], "categories": [], "brands": []},
        pin=[{"basket": {"code": [code]}, "item": {"code": [plain.items.codes[-1]]}, "position": 2}],
        boost=[{"code": [codes(plain.recommend([code], 6))[5]], "factor": 3.0}],
        do_not_pair=[{"basket": {"code": [code]}, "item": {"category": [kit(products, code)]}}],
    )
    model = view(plain, feed, rules)
    cases = [
        Options(explain=True),
        Options(price_max=3.0, explain=True),
        Options(max_per_category=1),
        Options(categories=(kit(products, anchors(plain)[3]),), explain=True),
        Options(min_confidence=0.01),
    ]
    baskets = [[code], anchors(plain)[:4], [], ["NOPE"]]

    def answers():
        return [
            [
                (
                    p.item.stock_code,
                    p.score,
                    p.source,
                    p.confidence,
                    p.boost,
                    p.because.as_list() if p.because is not None else None,
                )
                for p in model.recommend(b, 12, o).items
            ]
            for b in baskets
            for o in cases
        ]

    dense = answers()
    monkeypatch.setattr(merchandising, "DENSE_ITEMS", 0)
    assert answers() == dense and any(len(a) == 12 for a in dense)


def test_pins_count_toward_max_per_category(plain, feed):
    """Three Christmas items (one pinned, two the model's best) with max_per_category 2: the pin and one more."""
    code = anchors(plain)[0]
    top = codes(plain.recommend([code], 10))
    far = [c for c in reversed(plain.items.codes) if c not in top and c != code][:3]
    christmas = {**feed["items"]}
    for c in [top[0], top[1], *far]:
        christmas[c] = {**christmas.get(c, {}), "category": "Seasonal > Christmas", "availability": "in_stock"}
    pin = {"basket": {"code": [code]}, "item": {"code": [far[0]]}, "position": 3}
    model = view(plain, {"items": christmas}, no_rules(pin=[pin]))
    answer = model.recommend([code], 5, Options(max_per_category=2))
    got = codes(answer)
    assert len(got) == 5 and got[2] == far[0] and got[0] == top[0] and top[1] not in got
    assert sum(christmas.get(c, {}).get("category") == "Seasonal > Christmas" for c in got) == 2
    assert not answer.warnings
    # Pins alone beyond the cap: they stay, nothing else of the category comes in, and the answer says so.
    pins = [{**pin, "item": {"code": [c]}, "position": k} for k, c in enumerate(far, start=2)]
    answer = view(plain, {"items": christmas}, no_rules(pin=pins)).recommend([code], 5, Options(max_per_category=2))
    got = codes(answer)
    assert got[1:4] == far and top[0] not in got and len(got) == 5
    assert answer.warnings == [
        "max_per_category: 3 pinned items are in category 'Seasonal > Christmas', more than 2; the pins stay, "
        "and no other item of it is recommended"
    ]


def _finite_answers(model, baskets, options):
    """Every score (and boost) of every answer to these baskets, checked to be a finite float, as JSON shows it."""
    for basket in baskets:
        answer = model.recommend(basket, 10, options)
        legacy = orjson.loads(orjson.dumps(schemas.legacy_json(answer, True)))
        for code, _description, score in legacy["result"]["recommendation"]:
            assert isinstance(score, float) and math.isfinite(score), (code, score)
        for item in orjson.loads(orjson.dumps(schemas.answer_json(answer, True)))["items"]:
            assert isinstance(item["score"], float) and math.isfinite(item["score"])
            assert item.get("boost") is None or (0 < item["boost"] < math.inf)


def test_stacked_extreme_factors_keep_scores_finite(plain, feed):
    """Two boosts of 1e300 (or two buries of 1e-320) as a rules.json written by hand would hold them."""
    code = anchors(plain)[0]
    target = codes(plain.recommend([code], 3))[1]
    for factor in (1e300, 1e-320, float("inf"), 0.0):
        rules = no_rules(boost=[{"code": [target], "factor": factor}, {"code": [target], "factor": factor}])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow, no division by zero
            _finite_answers(view(plain, feed, rules), [[code], [target], []], Options(explain=True))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_rules_give_finite_scores(plain, feed, products, data):
    """Random stacks of boosts and buries by code, category and brand, random baskets and options: every score
    in every answer is a finite float."""
    pool = anchors(plain, 30)
    kits = sorted({f"Home > {k.title()}" for k in products.Kit})
    selector = st.one_of(
        st.builds(lambda c: {"code": c}, st.lists(st.sampled_from(pool), min_size=1, max_size=3)),
        st.builds(lambda c: {"category": [c]}, st.sampled_from([*kits, "Home"])),
        st.builds(lambda b: {"brand": [b]}, st.sampled_from(["Brand0", "Brand1", "Brand2"])),
    )
    # Mostly what a rules file may give; sometimes anything positive (a rules.json written by hand).
    factor = st.one_of(
        st.floats(min_value=MIN_RULE_FACTOR, max_value=MAX_RULE_FACTOR), st.floats(min_value=5e-324, max_value=1e308)
    )
    boosts = data.draw(st.lists(st.builds(lambda s, f: {**s, "factor": f}, selector, factor), max_size=30))
    baskets = data.draw(st.lists(st.lists(st.sampled_from(pool), max_size=3), min_size=1, max_size=3))
    options = Options(
        max_per_category=data.draw(st.one_of(st.none(), st.integers(1, 3))),
        exclude_categories=tuple(data.draw(st.lists(st.sampled_from(kits), max_size=2))),
        explain=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _finite_answers(view(plain, feed, no_rules(boost=boosts)), baskets, options)
