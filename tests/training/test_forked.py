"""A function run in a forked child process: its result, its exception and its progress lines come back."""

import os
import time

import numpy as np
import pytest

from recommender.core.errors import DataFileError
from recommender.training import forked

pytestmark = pytest.mark.skipif(not forked.available(), reason="this platform does not fork")


def _work(n: int, say) -> tuple[int, np.ndarray]:
    say(f"working on {n}")
    say("done")
    return os.getpid(), np.arange(n) * 2


def _fails(message: str, say) -> None:
    say("about to fail")
    raise DataFileError(message)


def test_the_result_comes_back_from_another_process_with_its_lines_replayed():
    lines: list[str] = []
    job = forked.Forked(_work, (5,), lines.append)
    assert lines == []  # replayed when the result is taken, in order
    pid, values = job.result()
    assert pid != os.getpid()
    assert np.array_equal(values, [0, 2, 4, 6, 8])
    assert lines == ["working on 5", "done"]


def test_an_exception_in_the_child_is_raised_in_the_parent():
    lines: list[str] = []
    job = forked.Forked(_fails, ("no baskets before the period",), lines.append)
    with pytest.raises(DataFileError, match="no baskets before the period"):
        job.result()
    assert lines == ["about to fail"]


def _sleeps(seconds: float, say) -> None:
    time.sleep(seconds)


def test_a_cancelled_child_is_stopped_at_once():
    job = forked.Forked(_sleeps, (60.0,), lambda _line: None)
    started = time.perf_counter()
    job.cancel()
    assert time.perf_counter() - started < 10
    assert job._process.exitcode is not None and not job._process.is_alive()
