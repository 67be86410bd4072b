"""A training's progress lines: what each stage says, one write per line (a training's two threads never run
together), and how long it took."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[str], None]


def say(text: str) -> None:
    """Print one line of progress in one write, so lines from a training's two threads never run together."""
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


@contextmanager
def stage(progress: Progress, text: str) -> Iterator[None]:
    """Report a training stage with its duration when it ends."""
    t = time.perf_counter()
    yield
    progress(f"{text} ({time.perf_counter() - t:.1f} s)")
