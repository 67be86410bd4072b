"""An experiment started and stopped with make while a real server (uvicorn, make run-prod) runs: answers carry the
shopper's arm within MODEL_POLL_SECONDS, then return to the active model without an arm."""

import time

import pytest

from recommender.core import experiments, registry
from recommender.core.experiments import Experiment
from recommender.serving.attribution import parse_recommendation_id
from tests.conftest import PASSWORD
from tests.core.test_experiments import copy_version
from tests.local.test_server import Http, make_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow
PATIENCE = 15.0  # MODEL_POLL_SECONDS is 1; a busy machine gets more before the test calls it a failure
SESSIONS = [f"session-{i}" for i in range(12)]


def arms_served(api: Http, code: str) -> dict[str, tuple[str | None, str]]:
    """Each session's (arm, model version), as the answers' recommendation ids say."""
    out = {}
    for session in SESSIONS:
        status, answer = api.call("POST", "/recommendations", {"product_list": [code], "n": 4, "session_id": session})
        assert status == 200, answer
        ref = parse_recommendation_id(answer["recommendation_id"])
        out[session] = (ref.arm, ref.version)
    return out


def wait_for(api: Http, code: str, expected: dict) -> float:
    started = time.monotonic()
    while (got := arms_served(api, code)) != expected:
        assert time.monotonic() - started < PATIENCE, f"not served within {PATIENCE} s: {got}"
        time.sleep(0.2)
    return time.monotonic() - started


def test_an_experiment_reaches_a_running_server_and_leaves_it(make_env, trained_storage):  # noqa: F811
    make, port, _ = make_env
    active = registry.active_version(trained_storage)
    other = copy_version(trained_storage, active, "20990101T000000000Z-0000000000aa")
    make("run-prod")
    api = Http(port)
    api.login("alice", PASSWORD)
    code = api.call("GET", "/items?limit=1")[1]["items"][0]["stock_code"]
    nobody = {s: (None, active) for s in SESSIONS}
    assert arms_served(api, code) == nobody

    arms = f"control=popular:20,a=active:40,b=version:{other}:40"
    started = make("experiment", "NAME=live", f"ARMS={arms}")
    assert "started experiment live" in started.stdout and "40%  version " + other in started.stdout
    refused = make("experiment", "NAME=second", "ARMS=a=active:50,b=popular:50", check=False)
    assert refused.returncode != 0 and "one experiment at a time" in refused.stderr
    experiment = Experiment("live", "", experiments.parse_arms(arms))
    expected = {
        s: (arm, other if arm == "b" else active) for s in SESSIONS for arm in [experiments.assign(experiment, s)]
    }
    assert len({arm for arm, _ in expected.values()}) == 3
    wait_for(api, code, expected)
    health = api.call("GET", "/health")[1]
    assert health["experiment"]["name"] == "live" and health["status"] == "ok"
    listed = make("experiments").stdout
    assert listed.startswith("running  live  since ") and "control   20%  popular" in listed

    stopped = make("experiment_stop", "NAME=live")
    assert "stopped experiment live" in stopped.stdout
    wait_for(api, code, nobody)
    assert "experiment" not in api.call("GET", "/health")[1]
    assert make("experiments").stdout.startswith("stopped  live  ")
