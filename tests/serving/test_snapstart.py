"""SnapStart (serving.snapstart): PRELOAD_MODEL loads the model while the recommend function initializes, and after a
restore the random seeds are renewed and the pointer looked at; without it nothing happens at import."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# A fresh interpreter as the Lambda runtime starts one; a stand-in for the runtime's snapshot_restore_py records the
# hooks registered, and the script then plays a restore by calling them.
INIT_THEN_RESTORE = r"""
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app
from recommender.core.settings import get_settings
from recommender.serving import web
holder = web.model_holder(get_settings())
at_init = holder.model.version if holder.model else None
import snapshot_restore_py as hooks
state = app._rng.getstate()
checked = holder._checked_at
for fn, args, kwargs in hooks.AFTER:
    fn(*args, **kwargs)
print("SNAP " + json.dumps({"at_init": at_init, "hooks": len(hooks.AFTER), "reseeded": app._rng.getstate() != state,
                            "looked_again": holder._checked_at > checked, "served": holder.model.version if holder.model else None}))
"""

FAKE_HOOKS = """AFTER = []
def register_after_restore(fn, *args, **kwargs):
    AFTER.append((fn, args, kwargs))
    return fn
"""


def init_then_restore(tmp_path, env: dict) -> dict:
    fake = tmp_path / "runtime"
    fake.mkdir()
    (fake / "snapshot_restore_py.py").write_text(FAKE_HOOKS)
    result = subprocess.run(
        [sys.executable, "-c", INIT_THEN_RESTORE, str(ROOT / "functions" / "recommend"), str(fake)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("SNAP ")), None)
    assert result.returncode == 0 and line, result.stdout + result.stderr
    return json.loads(line[len("SNAP ") :])


@pytest.fixture
def env(trained_storage, tmp_path) -> dict:
    return {
        **os.environ,
        "STORAGE_URL": str(trained_storage.root),
        "JWT_SECRET": "k" * 48,
        "CACHE_DIR": str(tmp_path / "cache"),
    }


def test_preload_loads_the_model_at_init_and_renews_after_restore(env, tmp_path):
    run = init_then_restore(tmp_path, {**env, "PRELOAD_MODEL": "true"})
    assert run["at_init"] is not None and run["served"] == run["at_init"]
    assert run["hooks"] == 1 and run["reseeded"] and run["looked_again"]


def test_without_preload_nothing_is_loaded_or_registered_at_import(env, tmp_path):
    run = init_then_restore(tmp_path, {**env, "PRELOAD_MODEL": "false"})
    assert run == {"at_init": None, "hooks": 0, "reseeded": False, "looked_again": False, "served": None}


def test_preload_without_a_model_still_starts(trained_storage, env, tmp_path):
    # No model trained yet: /health answers 503 at init, the function starts anyway and loads one later.
    empty = tmp_path / "empty"
    empty.mkdir()
    run = init_then_restore(tmp_path, {**env, "STORAGE_URL": str(empty), "PRELOAD_MODEL": "1"})
    assert run["at_init"] is None and run["hooks"] == 1
