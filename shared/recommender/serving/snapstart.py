"""Lambda SnapStart: the model loaded while the function initializes (so the snapshot holds it), and what must
differ between instances renewed when one is restored from that snapshot."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from recommender.core.settings import get_settings
from recommender.serving import web

log = logging.getLogger("recommender")

# GET /health as API Gateway (HTTP API, payload 2.0) sends it: no token needed; it loads the model the way a first
# request does and runs the request path (Mangum, routing, the JSON answer) once, so none of it is left for later.
HEALTH_EVENT = {
    "version": "2.0",
    "routeKey": "GET /health",
    "rawPath": "/health",
    "rawQueryString": "",
    "headers": {},
    "isBase64Encoded": False,
    "requestContext": {
        "http": {
            "method": "GET",
            "path": "/health",
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": "preload",
        },
        "requestId": "preload",
        "routeKey": "GET /health",
        "stage": "$default",
    },
}


def preload(handler: Callable[[dict, Any], dict], rng: random.Random) -> bool:
    """With PRELOAD_MODEL on: load and page in the active model now, answer one GET /health, and (when the Lambda
    runtime offers SnapStart's hooks) renew what restored instances must not share; False when off."""
    if not os.environ.get("PRELOAD_MODEL", "").strip():
        return False  # the usual case: nothing read, nothing cached at import
    settings = get_settings()
    if not settings.preload_model:
        return False
    holder = web.model_holder(settings)
    holder.warm = True  # every page of the arrays read now: in the snapshot, not faulted in by requests
    context = SimpleNamespace(
        function_name="preload", aws_request_id="preload", get_remaining_time_in_millis=lambda: 30000
    )
    status = handler(HEALTH_EVENT, context)["statusCode"]
    if status != 200:  # no model yet, or the storage failed: the first request tries again, as without preloading
        log.warning("preloading the model answered %s: the first request will load it", status)
    try:
        # Provided by the python3.12+ managed runtimes (SnapStart); absent elsewhere, e.g. on `make run`.
        from snapshot_restore_py import register_after_restore
    except ImportError:
        return True
    register_after_restore(renew, rng)
    return True


def renew(rng: random.Random) -> None:
    """After a restore: fresh random seeds (every instance restored from one snapshot would otherwise draw the same
    numbers), and a look at the active pointer (a model activated since the snapshot serves from the first request)."""
    rng.seed()
    random.seed()
    web.model_holder(get_settings()).refresh()
