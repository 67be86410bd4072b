"""The serving benchmark's in-process measures: the apps called as ASGI (no sockets), and a profile of a request."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import median, percentile
from bench.deployment import Deployment
from recommender.core.errors import ConfigError


def auth_header(credential: str) -> tuple[str, str]:
    """The header a credential travels in: X-API-Key for an API key (rk_...), else a bearer token."""
    return ("X-API-Key", credential) if credential.startswith("rk_") else ("Authorization", f"Bearer {credential}")


async def _asgi_post(app: Any, path: str, body: bytes, token: str) -> int:
    """One POST through an ASGI app in this process (no sockets); the response status."""
    header, credential = auth_header(token)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "headers": [
            (b"host", b"127.0.0.1"),
            (header.lower().encode(), credential.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    delivered = False
    status = 0

    async def receive() -> dict:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def asgi_latency(app: Any, bodies: Sequence[bytes], token: str, warmup: Sequence[bytes] = (), repeats: int = 1) -> dict:
    """Per-request time of an ASGI app called in-process: the app's own cost, without uvicorn and the network.

    The warm-up bodies should differ from the measured ones, so that an answer cache does not serve the latter.
    """
    import asyncio

    async def measure() -> list[list[int]]:
        for body in warmup:
            await _asgi_post(app, "/send_data", body, token)
        passes = []
        for _ in range(repeats):
            times = []
            for body in bodies:
                t = time.perf_counter_ns()
                status = await _asgi_post(app, "/send_data", body, token)
                times.append(time.perf_counter_ns() - t)
                if status != 200:
                    raise ConfigError(f"in-process request answered {status}")
            passes.append(times)
        return passes

    passes = asyncio.run(measure())
    return {
        "p50_us": median([percentile(np.asarray(t) / 1000, 50) for t in passes]),
        "p99_us": median([percentile(np.asarray(t) / 1000, 99) for t in passes]),
        "calls": len(bodies),
    }


def profile_hotspots(app: Any, bodies: Sequence[bytes], token: str, top: int = 15) -> list[dict]:
    """cProfile of in-process requests: the functions with the most own time, per request."""
    import asyncio
    import cProfile
    import pstats

    async def many() -> None:
        for body in bodies:
            await _asgi_post(app, "/send_data", body, token)

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(many())
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, ncalls, tottime, cumtime, callers)}
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    return [
        {
            "function": f"{Path(file).parent.name}/{Path(file).name}:{line}({name})" if file != "~" else name,
            "own_us_per_request": tottime / len(bodies) * 1e6,
            "calls_per_request": ncalls / len(bodies),
        }
        for (file, line, name), (_cc, ncalls, tottime, _cum, _callers) in rows
    ]


@contextmanager
def product_app_in_process(dep: Deployment, template: Path) -> Iterator[Any]:
    """The gateway app `make run` serves, built in this process over the deployment's storage."""
    from recommender.core.settings import get_settings
    from recommender.local.gateway import Gateway, read_routes
    from recommender.serving import web

    saved = os.environ.get("STORAGE_URL")
    os.environ["STORAGE_URL"] = dep.settings.storage_url
    get_settings.cache_clear()
    web.reset_resources()
    holder = web.model_holder(get_settings())
    holder.warm = True  # as `make run` serves it: Annoy's answers primed before the first request
    holder.refresh()
    try:
        yield Gateway(read_routes(template), template.resolve().parent)
    finally:
        if saved is None:
            os.environ.pop("STORAGE_URL", None)
        else:
            os.environ["STORAGE_URL"] = saved
        get_settings.cache_clear()
        web.reset_resources()
