"""The popular baseline (an experiment's no-model control): the popularity order under the same feed, rules and
options, always full when enough items are eligible; and the holder following an experiment's arms."""

import pytest

from recommender.core import experiments, registry
from recommender.core.errors import StorageError
from recommender.core.experiments import parse_arms
from recommender.core.storage import LocalStorage
from recommender.serving.arms import ExperimentHolder, PopularBaseline, arm_of
from recommender.serving.merchandising import Options
from recommender.serving.model import load_model
from tests.core.test_experiments import copy_version
from tests.serving.test_merchandising import anchors, codes, feed, kit, no_rules, plain, products, view  # noqa: F401


def popular_order(model, basket=(), n=10, skip=()):
    rows = [i for i in model.items.most_popular() if model.items.codes[i] not in (*basket, *skip)]
    return [model.items.codes[i] for i in rows[:n]]


def test_the_baseline_answers_the_popularity_order_never_the_model(trained_folder):
    storage = LocalStorage(trained_folder)
    model = load_model(storage, registry.active_version(storage), answer_cache=64)
    baseline = PopularBaseline.of(model)
    for code in anchors(model, 5):
        learned = model.recommend([code], 10)  # cached by the model first: the baseline must not reuse it
        answer = baseline.recommend([code], 10)
        assert codes(answer) == popular_order(model, [code]) != codes(learned)
        assert answer.fallback and answer.model_version == model.version and len(answer.items) == 10
        assert codes(baseline.recommend([code], 10)) == codes(answer)  # its own cache


def test_the_baseline_obeys_the_feed_the_rules_and_the_options(plain, feed, products):  # noqa: F811
    top = popular_order(plain, n=12)
    basket = [top[0]]
    stock = {**feed["items"], top[1]: {**feed["items"][top[1]], "availability": "out_of_stock"}}
    far = next(c for c in reversed(plain.items.codes) if c not in top)
    rules = no_rules(
        block={"codes": [top[2]], "categories": [], "brands": []},
        pin=[{"basket": {"code": [top[0]]}, "item": {"code": [far]}, "position": 2}],
    )
    baseline = PopularBaseline.of(view(plain, {"items": stock}, rules))
    answer = baseline.recommend(basket, 10, Options(explain=True))
    got = codes(answer)
    # Out of stock and blocked items are gone, the pin is at its place, the rest is the popularity order: full.
    assert len(got) == 10 and not answer.exhausted and answer.fallback
    assert got[1] == far and answer.items[1].source == "pinned"
    assert [c for c in got if c != far] == [c for c in top if c not in (top[0], top[1], top[2])][:9]
    assert {p.source for p in answer.items} == {"popular", "pinned"}
    assert all(p.because is None or not len(p.because) for p in answer.items)  # nothing learned to explain
    assert all(0 <= p.confidence <= 1 for p in answer.items)
    # The request's filters: a category, a price cap; always full while enough items pass, else exhausted.
    other = kit(products, top[3])
    in_kit = [c for c in plain.items.codes if kit(products, c) == other and c not in basket]
    filtered = baseline.recommend(basket, 3, Options(categories=(other,)))
    assert len(filtered.items) == 3 and set(codes(filtered)) <= set(in_kit) and not filtered.exhausted
    everything = baseline.recommend(basket, len(in_kit) + 5, Options(categories=(other,)))
    assert set(codes(everything)) <= set(in_kit) and everything.exhausted
    cheap = baseline.recommend(basket, 5, Options(price_max=1.0))
    assert all(feed["items"].get(c, {}).get("price", 0) <= 1.0 for c in codes(cheap) if c in feed["items"])


def test_the_holder_serves_each_arm_and_keeps_only_their_models(trained_storage):
    active = registry.active_version(trained_storage)
    other = copy_version(trained_storage, active, "20990101T000000000Z-0000000000aa")
    holder = ExperimentHolder(trained_storage, poll_seconds=60)
    model = holder.refresh()
    assert holder.routing is None and holder.health() is None
    assert arm_of(holder.routing, model, "s1") == (model, None)

    started = experiments.start(trained_storage, "e1", parse_arms(f"c=popular:20,a=active:40,b=version:{other}:40"))
    holder.refresh()
    routing = holder.routing
    assert routing is not None and routing.experiment == started and set(holder._loaded) == {other}
    seen = {}
    for i in range(200):
        chosen, arm = arm_of(routing, model, f"s{i}")
        assert arm == experiments.assign(started, f"s{i}")
        seen[arm] = chosen
    assert seen["a"] is model and isinstance(seen["c"], PopularBaseline) and seen["b"].version == other
    assert arm_of(routing, model, None) == (model, None)  # no shopper named: the active model, no arm
    health = holder.health()
    assert health["name"] == "e1" and health["degraded"] is None
    assert [a["serves"] for a in health["arms"]] == [
        f"the popularity order of the active model {active}",
        f"the active model {active}",
        f"model {other}",
    ]

    experiments.stop(trained_storage, "e1")
    holder.refresh()
    assert holder.routing is None and holder._loaded == {} and holder.health() is None


def test_a_version_that_fails_to_load_serves_the_active_model_and_says_so(trained_storage):
    active = registry.active_version(trained_storage)
    other = copy_version(trained_storage, active, "20990101T000000000Z-0000000000aa")
    experiments.start(trained_storage, "e2", parse_arms(f"a=active:50,b=version:{other}:50"))
    trained_storage.write(registry.artifact_key(other, "table_weight.npy"), b"damaged after the start")
    holder = ExperimentHolder(trained_storage, poll_seconds=60)
    model = holder.refresh()
    unit = next(f"s{i}" for i in range(100) if experiments.assign(holder.routing.experiment, f"s{i}") == "b")
    assert arm_of(holder.routing, model, unit) == (model, "b")
    health = holder.health()
    problem = health["arms"][1]["problem"]
    assert "table_weight.npy is damaged" in problem and problem.endswith("serving the active model instead")
    assert health["arms"][1]["serves"] == f"the active model {active}" and health["degraded"].startswith("arm b: ")
    assert holder._loaded == {}


def test_a_damaged_record_means_no_arms(trained_storage):
    holder = ExperimentHolder(trained_storage, poll_seconds=60)
    model = holder.refresh()
    trained_storage.write(experiments.CURRENT, b"{not json")
    holder.refresh()
    assert holder.routing is None and arm_of(holder.routing, model, "s1") == (model, None)
    assert "experiments/current.json is damaged" in holder.health()["degraded"]


@pytest.mark.parametrize("kind", ["staged", "version"])
def test_an_arm_naming_the_active_version_shares_its_model(trained_storage, kind):
    active = registry.active_version(trained_storage)
    if kind == "staged":
        registry.stage(trained_storage, active)
    arms = f"a=active:50,b={kind}:{active}:50" if kind == "version" else "a=active:50,b=staged:50"
    experiments.start(trained_storage, "same", parse_arms(arms))
    holder = ExperimentHolder(trained_storage, poll_seconds=60)
    holder.refresh()
    assert holder.routing.models == {"a": None, "b": None} and holder._loaded == {}
    assert holder.health()["arms"][1]["serves"] == f"model {active} (the active one)"


@pytest.mark.parametrize("unreachable", [("experiments/",), ("feed/", "rules/")])
def test_the_storage_failing_keeps_the_arms_served_so_far(trained_storage, monkeypatch, unreachable):
    active = registry.active_version(trained_storage)
    other = copy_version(trained_storage, active, "20990101T000000000Z-0000000000aa")
    experiments.start(trained_storage, "e3", parse_arms(f"a=active:50,b=version:{other}:50"))
    holder = ExperimentHolder(trained_storage, poll_seconds=60)
    holder.refresh()
    served = holder.routing
    read = trained_storage.read

    def failing(key: str) -> bytes:
        if key.startswith(unreachable):
            raise StorageError("the storage cannot be reached")
        return read(key)

    monkeypatch.setattr(trained_storage, "read", failing)
    holder.refresh()
    assert holder.routing is served and holder.routing.models["b"].version == other
    assert holder.health()["degraded"] == "the storage cannot be reached"
    monkeypatch.setattr(trained_storage, "read", read)
    holder.refresh()
    assert holder.health()["degraded"] is None and holder.routing.models["b"].version == other
