"""make simulate_shop end to end: the real server (uvicorn over loopback) driven over HTTP with an API key, then
make report; the report's counts equal the ground truth the simulator wrote beside it."""

from __future__ import annotations

import json
import os

import pytest

from recommender.local import server
from recommender.serving.keys import add_key
from tests.conftest import free_port, make_runner, start_server

pytestmark = pytest.mark.slow


def test_simulate_shop_then_report_match_exactly(trained_storage, user, tmp_path, tiny_csv):
    _, key = add_key(trained_storage, "simulator", "recommend,events", rate=100_000)
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "STORAGE_URL": str(trained_storage.root),
        "RUN_DIR": str(tmp_path / "run"),
        "CACHE_DIR": str(tmp_path / "cache"),
        "JWT_SECRET": "simulate-shop-test-secret-" + "x" * 40,
        "LOG_LEVEL": "warning",
    }
    settings = start_server(env)
    try:
        make = make_runner({**env, "API_KEY": key})
        out = tmp_path / "out" / "report.html"
        done = make("simulate_shop", "SESSIONS=300", f"PATH_TO_DATA={tiny_csv}", f"OUT={out}")
        assert "the report's counts equal the simulator's in every cell" in done.stdout
        truth = json.loads(out.with_suffix(".truth.json").read_text())
        assert truth["differences"] == [] and truth["truth"] == truth["report"]
        assert sum(cell["sessions"] for cell in truth["truth"].values()) == 300
        # Without a credential: one clear line, no traceback.
        refused = make_runner(env)("simulate_shop", "SESSIONS=10", check=False)
        assert refused.returncode != 0 and "give a key of scopes recommend,events" in refused.stderr
        # A user's token works too (POST /token, then bearer), and the counts still match.
        by_user = make_runner({**env, "USER_NAME": user.username, "PASSWORD": user.password})
        done = by_user("simulate_shop", "SESSIONS=50", "SEED=2", f"PATH_TO_DATA={tiny_csv}", f"OUT={out}")
        assert "the report's counts equal the simulator's in every cell" in done.stdout
        again = make("report", f"OUT={out}")
        assert "last 30 days: 350 sessions with recommendations" in again.stdout
    finally:
        server.stop(settings)
