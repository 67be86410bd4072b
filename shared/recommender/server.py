"""Running the API locally: in the foreground (make run) or in the background with a pid file (make run-prod)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import registry
from .errors import ConfigError, RecommenderError
from .settings import Settings
from .storage import open_storage

log = logging.getLogger("recommender")


@dataclass(frozen=True)
class ServerInfo:
    """What the pid file of a background server records."""

    pid: int
    host: str
    port: int
    log_file: str


def pid_file(settings: Settings) -> Path:
    """Where the background server's pid file lives."""
    return Path(settings.run_dir) / "server.pid"


def log_file(settings: Settings) -> Path:
    """Where the background server writes its log."""
    return Path(settings.run_dir) / "server.log"


def serve(settings: Settings, template: Path) -> None:
    """Serve every route of template.yaml on settings.host:port in the foreground until interrupted."""
    import uvicorn

    from .gateway import Gateway, read_routes
    from .web import model_holder

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    storage = open_storage(settings)
    try:
        registry.active_version(storage)
        model = model_holder(settings).refresh()
        if model is not None:
            log.info("serving model %s (%d items) from %s", model.version, len(model.catalog), storage.url)
        else:
            log.warning("the active model cannot be served: %s", model_holder(settings).error)
    except RecommenderError as err:
        log.warning("%s; the API starts anyway and picks up a model as soon as one is activated", err.message)
    gateway = Gateway(read_routes(template), template.parent)
    log.info("routes from %s: %s", template.name, ", ".join(f"{r.method} {r.path}" for r in gateway.routes))
    if _port_open(settings.host, settings.port):
        raise ConfigError(f"port {settings.port} on {settings.host} is already in use (another server?); set PORT=...")
    uvicorn.run(gateway, **uvicorn_options(settings))


def uvicorn_options(settings: Settings) -> dict:
    """How `make run` and `make run-prod` run uvicorn; the benchmark's ceiling app runs with the same options."""
    # One worker; loop and HTTP parser are uvicorn's "auto" (uvloop and httptools when installed).
    return {"host": settings.host, "port": settings.port, "log_level": settings.log_level, "access_log": False,
            "server_header": False}


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def _is_our_server(pid: int) -> bool:
    """Guards against a recycled pid: the process must be a recommender serve command."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc (macOS): trust the pid file
    return b"recommender" in b" ".join(cmdline) and b"serve" in cmdline


def read_pid_file(settings: Settings) -> ServerInfo | None:
    """The running background server, or None (a stale pid file is removed)."""
    path = pid_file(settings)
    try:
        info = ServerInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(info.pid) and _is_our_server(info.pid):
        return info
    path.unlink(missing_ok=True)
    return None


def health(host: str, port: int, timeout: float = 2.0) -> dict | None:
    """The /health answer of a server (even a 503 one), or None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        try:
            return json.loads(err.read())
        except ValueError:
            return {"status": f"http {err.code}"}
    except (OSError, ValueError):
        return None


def start(settings: Settings, template: Path, timeout: float = 60.0) -> ServerInfo:
    """Start `serve` in the background; return once it answers /health. Refuses to start a second one."""
    running = read_pid_file(settings)
    if running is not None:
        raise ConfigError(f"a server is already running (pid {running.pid}, http://{running.host}:{running.port}); "
                          "`make kill` stops it")
    if _port_open(settings.host, settings.port):
        raise ConfigError(f"port {settings.port} on {settings.host} is already in use; set PORT=...")
    run_dir = Path(settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_file(settings)
    env = {**os.environ, "HOST": settings.host, "PORT": str(settings.port), "STORAGE_URL": settings.storage_url}
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "recommender", "serve", "--template", str(template)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    info = ServerInfo(process.pid, settings.host, settings.port, str(log_path))
    pid_file(settings).write_text(json.dumps(info.__dict__))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pid_file(settings).unlink(missing_ok=True)
            tail = log_path.read_text(errors="replace").splitlines()[-5:]
            raise ConfigError("the server exited at start:\n" + "\n".join(tail))
        if health(settings.host, settings.port, timeout=1.0) is not None:
            return info
        time.sleep(0.2)
    stop(settings)
    raise ConfigError(f"the server did not answer on http://{settings.host}:{settings.port} within {timeout:.0f} s; "
                      f"see {log_path}")


def stop(settings: Settings, timeout: float = 15.0) -> ServerInfo | None:
    """Stop the background server named by the pid file (SIGTERM, then SIGKILL), and wait until its port is free."""
    info = read_pid_file(settings)
    if info is None:
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
        while _alive(info.pid):
            time.sleep(0.05)
    while _port_open(info.host, info.port) and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    pid_file(settings).unlink(missing_ok=True)
    return info
