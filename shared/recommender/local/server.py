"""Running the API locally: in the foreground (make run) or in the background with a pid file (make run-prod)."""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from recommender.core import registry
from recommender.core.errors import ConfigError, RecommenderError
from recommender.core.settings import Settings
from recommender.core.storage import open_storage
from recommender.local import processes
from recommender.local.processes import Background

log = logging.getLogger("recommender")


def pid_file(settings: Settings) -> Path:
    """Where the background server's pid file lives."""
    return Path(settings.run_dir) / "server.pid"


def log_file(settings: Settings) -> Path:
    """Where the background server writes its log."""
    return Path(settings.run_dir) / "server.log"


def serve(settings: Settings, template: Path) -> None:
    """Serve every route of template.yaml on settings.host:port in the foreground until interrupted."""
    import uvicorn

    from recommender.local.gateway import Gateway, read_routes
    from recommender.serving.tokens import load_secret
    from recommender.serving.web import model_holder

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    storage = open_storage(settings)
    # A signing secret that cannot be used stops the server now, with its message, rather than at the first login.
    load_secret(settings, storage)
    holder = model_holder(settings)
    # A long-running server asks Annoy for every item before a model serves; a Lambda container does not (its
    # cold start would pay for it) and asks as baskets come.
    holder.warm = True
    try:
        registry.active_version(storage)
        if holder.refresh() is None:
            log.warning("the active model cannot be served: %s", holder.error)
    except RecommenderError as err:
        log.warning("%s; the API starts anyway and picks up a model as soon as one is activated", err.message)
    gateway = Gateway(read_routes(template), template.parent)
    log.info("routes from %s: %s", template.name, ", ".join(f"{r.method} {r.path}" for r in gateway.routes))
    if processes.port_open(settings.host, settings.port):
        raise ConfigError(f"port {settings.port} on {settings.host} is already in use (another server?); set PORT=...")
    # Everything loaded so far lives as long as the process: keep it out of the collector's full passes, which
    # would otherwise walk the model's item objects and stall a request now and then.
    gc.freeze()
    stop = threading.Event()
    holder.watch(stop)  # model swaps happen beside the requests, never inside one
    try:
        uvicorn.run(gateway, **uvicorn_options(settings))
    finally:
        stop.set()


def uvicorn_options(settings: Settings) -> dict:
    """How `make run` and `make run-prod` run uvicorn; the benchmark's ceiling app runs with the same options.

    Raises the process's soft limit on open files to its hard limit (where allowed) to fit the connection limit."""
    from recommender.local.connections import connection_limit, raise_file_limit
    from recommender.local.protocol import Limits, limited_protocol

    open_files = raise_file_limit()
    limits = Limits.of(settings, max_connections=connection_limit(settings.max_connections, open_files))
    if limits.max_connections < settings.max_connections:
        log.warning(
            "at most %d connections (not MAX_CONNECTIONS=%d): the process may open %d files and keeps some for itself",
            limits.max_connections,
            settings.max_connections,
            open_files,
        )
    # One worker; the loop is uvicorn's "auto" (uvloop when installed), the HTTP parser httptools with limits on
    # the size and the time of a request's head and body, and on connections (uvicorn sets none of them).
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,
        "server_header": False,
        "http": limited_protocol(limits),
    }


def _is_server(argv: list[bytes]) -> bool:
    return b"recommender" in b" ".join(argv) and b"serve" in argv


def read_pid_file(settings: Settings) -> Background | None:
    """The running background server, or None (a stale pid file is removed)."""
    return processes.read_pid_file(pid_file(settings), _is_server)


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


def start(settings: Settings, template: Path, timeout: float = 60.0) -> Background:
    """Start `serve` in the background; return once it answers /health. Refuses to start a second one."""
    running = read_pid_file(settings)
    if running is not None:
        raise ConfigError(
            f"a server is already running (pid {running.pid}, http://{running.host}:{running.port}); "
            "`make kill` stops it"
        )
    env = {**os.environ, "HOST": settings.host, "PORT": str(settings.port), "STORAGE_URL": settings.storage_url}
    process, info = processes.spawn(
        [sys.executable, "-m", "recommender", "serve", "--template", str(template)],
        pid_file(settings),
        log_file(settings),
        settings.host,
        settings.port,
        env,
    )
    processes.wait_ready(
        process, pid_file(settings), lambda: health(settings.host, settings.port, 1.0) is not None, timeout, "server"
    )
    return info


def stop(settings: Settings) -> Background | None:
    """Stop the background server named by the pid file, and wait until its port is free; None if none runs."""
    info = read_pid_file(settings)
    if info is not None:
        processes.terminate(info, pid_file(settings))
    return info
