"""Background processes the command line starts (the API server, the S3 emulator): pid files, start, stop.

A process is stopped by the pid its pid file records, never by port or name, and only if it still is the one we
started: same start time (recorded at spawn, from /proc) and a command line of the expected shape. A pid can be
recycled, and a pid file can name another server with the same command line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from recommender.core.errors import ConfigError


@dataclass(frozen=True)
class Background:
    """What a pid file records: the process, where it listens, and its log."""

    pid: int
    host: str
    port: int
    log_file: str
    started: int | None = None  # the process's start time (clock ticks after boot, /proc/<pid>/stat)


def port_open(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def command_line(pid: int) -> list[bytes] | None:
    """The process's argv, or None where /proc does not exist (macOS)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks after boot (field 22 of /proc/<pid>/stat); None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        # The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def read_pid_file(path: Path, is_ours: Callable[[list[bytes]], bool]) -> Background | None:
    """The process a pid file names if it still runs and is the one started then (same start time, and is_ours(argv)
    says it is ours); a stale file is removed."""
    try:
        info = Background(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    argv = command_line(info.pid)
    if alive(info.pid) and (argv is None or (is_ours(argv) and _same_start(info))):
        return info
    path.unlink(missing_ok=True)
    return None


def _same_start(info: Background) -> bool:
    # Where /proc exists, a pid file without a start time (hand-written, or older than this check) is not trusted.
    return info.started is not None and start_time(info.pid) == info.started


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log file, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def spawn(
    argv: Sequence[str], pid_path: Path, log_path: Path, host: str, port: int, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen, Background]:
    """Start argv detached from this terminal, output to log_path, and record it in pid_path."""
    if port_open(host, port):
        raise ConfigError(f"port {port} on {host} is already in use; choose another with PORT=...")
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    info = Background(process.pid, host, port, str(log_path), start_time(process.pid))
    pid_path.write_text(json.dumps(asdict(info)))
    return process, info


def wait_ready(process: subprocess.Popen, pid_path: Path, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ready() is true; if the process dies first or time runs out, clean up and say why."""
    log_path = Path(json.loads(pid_path.read_text())["log_file"])
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            pid_path.unlink(missing_ok=True)
            raise ConfigError(f"the {what} exited at start:\n{log_tail(log_path)}")
        if time.monotonic() > deadline:
            terminate(Background(**json.loads(pid_path.read_text())), pid_path)
            raise ConfigError(f"the {what} did not get ready within {timeout:.0f} s; see {log_path}")
        time.sleep(0.1)


def terminate(info: Background, pid_path: Path, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after timeout; return once the process is gone and its port is free."""
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
        while alive(info.pid):
            time.sleep(0.05)
    while port_open(info.host, info.port) and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    pid_path.unlink(missing_ok=True)
