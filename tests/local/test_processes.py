"""Pid files: `make kill` stops the process run-prod started, and nothing else that merely looks like it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recommender import cli
from recommender.core.settings import get_settings
from recommender.local import processes, server
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times come from /proc")


@pytest.fixture
def decoy():
    """A process whose command line looks like the server's (`... recommender serve`), but that run-prod never started."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "recommender", "serve"])
    yield process
    process.kill()
    process.wait()


def _write_pid_file(pid: int, started: int | None) -> Path:
    path = server.pid_file(get_settings())
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": "127.0.0.1", "port": free_port(), "log_file": "/dev/null"}
    path.write_text(json.dumps(record if started is None else {**record, "started": started}))
    return path


def test_start_time_is_read_from_proc(decoy):
    assert processes.start_time(decoy.pid) == processes.start_time(decoy.pid) > 0
    assert processes.start_time(decoy.pid) >= processes.start_time(1)


@pytest.mark.parametrize("recorded", ["other", "missing"])
def test_kill_spares_a_process_started_by_someone_else(decoy, capsys, recorded):
    started = processes.start_time(decoy.pid)
    path = _write_pid_file(decoy.pid, started - 1 if recorded == "other" else None)
    assert cli.main(["stop"]) == 0
    assert "no background server is running" in capsys.readouterr().out
    assert decoy.poll() is None  # still running
    assert not path.exists()  # the stale pid file is gone


def test_kill_stops_the_process_the_pid_file_recorded(decoy, capsys):
    _write_pid_file(decoy.pid, processes.start_time(decoy.pid))
    assert cli.main(["stop"]) == 0
    assert f"stopped server pid {decoy.pid}" in capsys.readouterr().out
    assert decoy.wait(timeout=30) is not None
