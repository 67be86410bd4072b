"""A file read in a background thread while training's imports run: started once per file, taken by its reader."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_started: dict[tuple, tuple[threading.Thread, dict[str, Any]]] = {}
_lock = threading.Lock()


def _key(path: Path) -> tuple:
    # The file as it is now: a file rewritten after the prefetch started is not the one it read.
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def start(path: Path, read: Callable[[Path], Any], name: str) -> None:
    """Run read(path) in a thread named name, unless one already runs for this file; nothing if it is gone."""
    try:
        key = _key(path)
    except OSError:
        return
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = read(path)
        except BaseException as err:  # handed to the reader, which says what went wrong
            box["error"] = err

    # Not a daemon: the interpreter waits for the read before it exits (a command that fails before reading, say),
    # instead of tearing down Arrow's or calamine's native code mid-read, which crashes the process.
    thread = threading.Thread(target=run, name=name, daemon=False)
    with _lock:
        if key in _started:
            return
        _started[key] = (thread, box)
    thread.start()


def take(path: Path) -> dict[str, Any] | None:
    """What the thread started for this file got, waited for and forgotten: {"value": ...} or {"error": exception};
    None when none was started (or the file changed since)."""
    try:
        key = _key(path)
    except OSError:
        return None
    with _lock:
        started = _started.pop(key, None)
    if started is None:
        return None
    thread, box = started
    thread.join()
    return box
