"""Experiments through the recommend function: each answer carries its shopper's arm in the recommendation_id, the
arm's model answers, /health describes the experiment, and the Lambda path picks it up by per-request polling."""

import json

import pytest
from fastapi.testclient import TestClient

from functions.recommend.app import app as recommend_app
from recommender.core import experiments, registry
from recommender.core.experiments import parse_arms
from recommender.core.settings import get_settings
from recommender.serving import web
from recommender.serving.attribution import parse_recommendation_id
from recommender.serving.schemas import HealthOut
from tests.core.test_experiments import copy_version
from tests.functions.test_functions import auth, headers, items, token  # noqa: F401  (fixtures)
from tests.functions.test_handlers import body, handlers, s3_deployment, with_token  # noqa: F401  (fixtures)
from tests.functions.test_handlers import token as lambda_token  # noqa: F401  (fixture)


@pytest.fixture
def rec(trained_storage, user):
    with TestClient(recommend_app) as client:
        yield client


def refresh() -> None:
    """What the next poll does (the server test waits for it instead)."""
    web.model_holder(get_settings()).refresh()


def ask(rec, headers, code, **who):  # noqa: F811
    """/recommendations and /send_data for one basket; both answers' recommendation ids, parsed."""
    answer = rec.post("/recommendations", headers=headers, json={"product_list": [code], "n": 5, **who})
    legacy = rec.post("/send_data", headers=headers, json={"product_list": [code], "n": 5, **who})
    assert answer.status_code == 200 and legacy.status_code == 200, answer.text + legacy.text
    return (
        answer.json(),
        parse_recommendation_id(answer.json()["recommendation_id"]),
        parse_recommendation_id(legacy.headers["x-recommendation-id"]),
    )


def test_answers_carry_the_arm_and_the_arm_answers(rec, headers, items, trained_storage):  # noqa: F811
    active = registry.active_version(trained_storage)
    other = copy_version(trained_storage, active, "20990101T000000000Z-0000000000aa")
    code = items.codes[items.most_popular()[0]]
    _, before, _ = ask(rec, headers, code, session_id="s0")
    assert before.arm is None and before.version == active  # no experiment: no arm

    experiment = experiments.start(
        trained_storage, "new-model", parse_arms(f"control=popular:34,a=active:33,b=version:{other}:33")
    )
    refresh()
    popular = [items.codes[i] for i in items.most_popular() if items.codes[i] != code][:5]
    seen = set()
    for i in range(30):
        answer, ref, legacy_ref = ask(rec, headers, code, session_id=f"session-{i}")
        arm = experiments.assign(experiment, f"session-{i}")
        assert ref.arm == legacy_ref.arm == arm
        assert ref.version == legacy_ref.version == answer["model_version"] == (other if arm == "b" else active)
        shown = [item["stock_code"] for item in answer["items"]]
        if arm == "control":
            assert shown == popular and answer["fallback"] and {i["source"] for i in answer["items"]} == {"popular"}
        else:
            assert shown != popular and not answer["fallback"]
        seen.add(arm)
    assert seen == {"control", "a", "b"}

    # The user id, when given, decides (the same shopper on any device); no id at all: the active model, no arm.
    user = next(f"user-{i}" for i in range(100) if experiments.assign(experiment, f"user-{i}") == "b")
    session = next(f"s-{i}" for i in range(100) if experiments.assign(experiment, f"s-{i}") == "control")
    assert ask(rec, headers, code, session_id=session, user_id=user)[1].arm == "b"
    _, none, legacy_none = ask(rec, headers, code)
    assert none.arm is None and legacy_none.arm is None and none.version == active

    health = rec.get("/health").json()
    HealthOut.model_validate(health)  # the documented schema, arms included
    assert health["status"] == "ok" and health["experiment"]["name"] == "new-model"
    assert [(a["name"], a["kind"], a["share"], a["problem"]) for a in health["experiment"]["arms"]] == [
        ("control", "popular", 34, None),
        ("a", "active", 33, None),
        ("b", "version", 33, None),
    ]

    experiments.stop(trained_storage, "new-model")
    refresh()
    _, after, _ = ask(rec, headers, code, session_id=session)
    assert after.arm is None and after.version == active and "experiment" not in rec.get("/health").json()


def test_a_failing_arm_version_is_served_by_the_active_model_and_health_says_so(
    rec,
    headers,  # noqa: F811
    items,  # noqa: F811
    trained_storage,
):
    active = registry.active_version(trained_storage)
    other = copy_version(trained_storage, active, "20990101T000000000Z-0000000000aa")
    experiment = experiments.start(trained_storage, "broken-arm", parse_arms(f"a=active:50,b=version:{other}:50"))
    trained_storage.delete(registry.artifact_key(other, "index.ann"))
    refresh()
    health = rec.get("/health").json()
    HealthOut.model_validate(health)
    assert health["status"] == "degraded" and "arm b: model version" in health["detail"]
    arm_b = health["experiment"]["arms"][1]
    assert arm_b["serves"] == f"the active model {active}" and "index.ann is missing" in arm_b["problem"]
    session = next(f"s-{i}" for i in range(100) if experiments.assign(experiment, f"s-{i}") == "b")
    _, ref, _ = ask(rec, headers, items.codes[0], session_id=session)
    assert ref.arm == "b" and ref.version == active


@pytest.mark.parametrize(
    "who,message",
    [
        ({"session_id": ""}, "session_id: String should have at least 1 character"),
        ({"session_id": "a\nb"}, "session_id: String should match pattern"),
        ({"user_id": "u" * 129}, "user_id: String should have at most 128 characters"),
        ({"session_id": 12}, "session_id: Input should be a valid string"),
        ({"session": "abc"}, "unknown field(s) 'session'"),
    ],
)
def test_bad_shopper_ids_are_422s(rec, headers, who, message):  # noqa: F811
    response = rec.post("/recommendations", headers=headers, json={"product_list": ["A"], "n": 3, **who})
    assert response.status_code == 422 and message in response.json()["detail"], response.text


def test_the_lambda_path_follows_an_experiment_by_polling(
    s3_deployment,  # noqa: F811
    lambda_token,  # noqa: F811
    handlers,  # noqa: F811
    event,
    lambda_context,
    monkeypatch,
):
    storage, version, items = s3_deployment
    monkeypatch.setenv("MODEL_POLL_SECONDS", "0")  # every request looks (the watcher of a Lambda container)
    get_settings.cache_clear()
    web.reset_resources()
    recommend = handlers[1]

    def arm_of_answer(session: str) -> str | None:
        ev = with_token(event("recommendations"), lambda_token)
        ev["body"] = json.dumps({"product_list": [items.codes[0]], "n": 3, "session_id": session})
        response = recommend(ev, lambda_context)
        assert response["statusCode"] == 200, response
        return parse_recommendation_id(body(response)["recommendation_id"]).arm

    assert arm_of_answer("s-1") is None
    experiment = experiments.start(storage, "on-lambda", parse_arms("a=active:50,control=popular:50"))
    assert arm_of_answer("s-1") == experiments.assign(experiment, "s-1")
    assert body(recommend(event("health"), lambda_context))["experiment"]["name"] == "on-lambda"
    experiments.stop(storage, "on-lambda")
    assert arm_of_answer("s-1") is None
