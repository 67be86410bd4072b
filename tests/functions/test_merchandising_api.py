"""Request options and merchandising through the recommend function: answers, 422s naming the fields, old clients."""

import re

import pytest
from fastapi.testclient import TestClient

from functions.recommend.app import app as recommend_app
from recommender.core import registry
from recommender.core.items import Items
from recommender.core.settings import get_settings
from recommender.serving import web
from recommender.training.feed import publish_feed
from tests.functions.test_functions import auth, headers, token  # noqa: F401  (fixtures)


@pytest.fixture
def rec(trained_storage, user):
    with TestClient(recommend_app) as client:
        yield client


@pytest.fixture
def items(trained_storage):
    version = registry.active_version(trained_storage)
    return Items.from_json(trained_storage.read(registry.artifact_key(version, "catalog.json")))


@pytest.mark.parametrize(
    "body,field",
    [
        ({"price_min": 5, "price_max": 2}, "price_min \\(5\\) is greater than price_max \\(2\\)"),
        ({"max_price_ratio": -1}, "max_price_ratio: Input should be greater than or equal to 0"),
        ({"min_confidence": 1.5}, "min_confidence: Input should be less than or equal to 1"),
        ({"max_per_category": 0}, "max_per_category: Input should be greater than or equal to 1"),
        ({"exclude": "85123A"}, "exclude: Input should be a valid (list|array)"),
        ({"price_max": "cheap"}, "price_max: Input should be a valid number"),
    ],
)
def test_contradictions_and_bad_options_are_422s_naming_the_field(rec, headers, body, field):
    for path in ("/recommendations", "/send_data"):
        response = rec.post(path, headers=headers, json={"product_list": ["A"], "n": 3, **body})
        assert response.status_code == 422
        assert re.search(field, response.json()["detail"]), response.json()["detail"]


def test_options_reasons_and_feed_attributes(rec, headers, items, trained_storage, tmp_path):
    code = items.codes[items.most_popular()[0]]
    plain = rec.post("/send_data", headers=headers, json={"product_list": [code], "n": 5}).json()
    rows = plain["result"]["recommendation"]
    assert set(plain) == {"result"} and set(plain["result"]) == {"recommendation"}  # old clients: unchanged
    first = rows[0][0]
    feed = tmp_path / "feed.csv"
    feed.write_text(
        f"id,availability,price,category,image_link\n{first},out_of_stock,2.5 GBP,Mugs,http://i/1\n"
        f"{rows[1][0]},in_stock,4,Home > Mugs,http://i/2\n"
    )
    publish_feed(trained_storage, feed, progress=lambda _m: None)
    web.model_holder(get_settings()).refresh()  # what the next poll does (the server test waits for it instead)

    body = rec.post("/recommendations", headers=headers, json={"product_list": [code], "n": 5}).json()
    assert body["feed_version"] == registry.active_version(trained_storage, registry.FEED)
    assert [i["stock_code"] for i in body["items"]][0] == rows[1][0] and len(body["items"]) == 5
    assert first not in [i["stock_code"] for i in body["items"]] and body["exhausted"] is False
    top = body["items"][0]
    assert top["source"] == "model" and top["price"] == 4.0 and top["category"] == "Home > Mugs"
    assert top["availability"] == "in_stock" and top["image_link"] == "http://i/2"
    assert sum(r["share"] for r in top["because"]) == pytest.approx(1.0) and top["because"][0]["stock_code"] == code
    legacy = rec.post("/send_data", headers=headers, json={"product_list": [code], "n": 5}).json()
    assert [r[0] for r in legacy["result"]["recommendation"]] == [i["stock_code"] for i in body["items"]]

    filtered = rec.post(
        "/recommendations",
        headers=headers,
        json={"product_list": [code], "n": 5, "categories": ["mugs"], "explain": False},
    ).json()
    assert [i["stock_code"] for i in filtered["items"]] == [rows[1][0]] and filtered["exhausted"] is True
    assert "because" not in filtered["items"][0]
    explained = rec.post(
        "/send_data", headers=headers, json={"product_list": [code], "n": 2, "exclude": [rows[1][0]], "explain": True}
    ).json()
    assert rows[1][0] not in [r[0] for r in explained["result"]["recommendation"]]
    assert [i["stock_code"] for i in explained["result"]["items"]] == [
        r[0] for r in explained["result"]["recommendation"]
    ]
    health = rec.get("/health").json()
    assert health["feed_version"] == body["feed_version"] and health["rules_version"] is None


def test_unknown_fields_are_refused_by_recommendations_and_accepted_by_send_data(rec, headers, items):
    code = items.codes[items.most_popular()[0]]
    body = {"product_list": [code], "n": 3, "exlude": [code], "maxprice": 2}
    refused = rec.post("/recommendations", headers=headers, json=body)
    assert refused.status_code == 422
    assert re.search(r"unknown field\(s\) 'exlude', 'maxprice'; the fields are product_list, n, exclude", refused.text)
    legacy = rec.post("/send_data", headers=headers, json=body)  # older clients send fields of their own
    assert legacy.status_code == 200 and len(legacy.json()["result"]["recommendation"]) == 3


def test_an_unknown_category_is_a_warning_not_a_silent_empty_answer(rec, headers, items, trained_storage, tmp_path):
    code = items.codes[items.most_popular()[0]]
    other = items.codes[items.most_popular()[1]]
    feed = tmp_path / "feed.csv"
    feed.write_text(f"id,category\n{other},Home > Mugs\n")
    publish_feed(trained_storage, feed, progress=lambda _m: None)
    web.model_holder(get_settings()).refresh()
    body = rec.post(
        "/recommendations",
        headers=headers,
        json={"product_list": [code], "n": 3, "categories": ["Mgus"], "exclude_categories": ["Toys"]},
    ).json()
    assert body["items"] == [] and body["exhausted"] is True
    assert body["warnings"] == [
        "categories: category 'Mgus' is not in the product feed; no item can match it",
        "exclude_categories: category 'Toys' is not in the product feed; it excludes nothing",
    ]
    known = rec.post(
        "/recommendations", headers=headers, json={"product_list": [code], "n": 3, "categories": ["mugs"]}
    ).json()
    assert [i["stock_code"] for i in known["items"]] == [other] and known["warnings"] == []
