"""A function run in a forked child process, beside the caller's own work on the other core: its result (or its
exception) and the progress lines it said come back through a pipe. A process, not a thread: the re-ranker's
features are many small numpy calls that hold Python's lock between them, and two threads doing them at once took
more CPU and more wall time than one after the other on a busy machine (bench/results/rerank.md)."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable
from typing import Any


def available() -> bool:
    """Whether this platform forks (Linux; not Windows, and macOS's default start method is spawn for good reason:
    there the work runs in the caller, one after the other)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class Forked:
    """fn(*args, say) started in a child process at once; result() waits for it and returns what fn returned (or
    raises what it raised), after replaying the lines fn gave say to the given progress."""

    def __init__(self, fn: Callable[..., Any], args: tuple, progress: Callable[[str], None]) -> None:
        self._progress = progress
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)

        def run() -> None:
            said: list[str] = []
            try:
                outcome: tuple = (True, fn(*args, said.append))
            except BaseException as err:  # noqa: BLE001 (raised again in the parent)
                outcome = (False, err)
            try:
                send.send((outcome, said))
            except Exception as err:  # noqa: BLE001 (an exception that does not pickle)
                send.send(((False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} ({err})")), said))

        # What the parent has buffered would be written again by the child's copy of the buffers.
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._process = context.Process(target=run, daemon=True, name="recommender-forked")
        self._process.start()
        send.close()

    def result(self) -> Any:
        """fn's result (its exception raised here), once its lines are replayed."""
        try:
            (ok, value), said = self._receive.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(
                f"a training process ended without its result (exit code {self._process.exitcode})"
            ) from None
        finally:
            self._receive.close()
        self._process.join()
        for line in said:
            self._progress(line)
        if not ok:
            raise value
        return value

    def cancel(self) -> None:
        """Stop the child (when the caller's own work failed and its result will not be asked for)."""
        self._process.terminate()
        self._process.join()
        self._receive.close()
