"""Local stand-in for API Gateway: routes each request to the function template.yaml says serves it.

template.yaml is the single source of truth for the routes; this module reads its HttpApi events, loads each
function's app from its CodeUri and Handler (as `sam local start-api` does), and dispatches by method and path.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from starlette.types import ASGIApp, Receive, Scope, Send

from recommender.core.errors import ConfigError
from recommender.local import api_docs
from recommender.local.template import plain, read_template


@dataclass(frozen=True)
class Route:
    """One HttpApi event of a function."""

    method: str
    path: str
    function: str  # logical id in the template
    code_uri: str  # folder of the function's code
    handler: str  # "module.attribute" of the Lambda handler


def read_routes(template: Path) -> list[Route]:
    """Every HttpApi route of every AWS::Serverless::Function in the template."""
    try:
        doc = plain(read_template(template))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read routes from {template}: {err}") from None
    routes = []
    for name, resource in (doc.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        for event in (props.get("Events") or {}).values():
            if event.get("Type") == "HttpApi":
                ev = event.get("Properties", {})
                routes.append(Route(ev["Method"].upper(), ev["Path"], name, props["CodeUri"], props["Handler"]))
    if not routes:
        raise ConfigError(f"{template} declares no HttpApi routes")
    return routes


def load_function_app(root: Path, code_uri: str, handler: str) -> Any:
    """The ASGI app of a function: the `app` beside the Lambda handler in the handler's module."""
    module_name, _, _attr = handler.rpartition(".")
    path = root / code_uri / f"{module_name.replace('.', '/')}.py"
    unique = "functions_" + "_".join(Path(code_uri).parts[-1:]) + "_" + module_name
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load function code {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module.app


def merged_openapi(apps: list[Any], routes: list[Route]) -> dict:
    """One OpenAPI document for every routed path, so /docs shows the whole API with its Authorize button."""
    routed = {(r.method.lower(), r.path) for r in routes}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Recommender API", "version": "1.0"},
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {}},
    }
    for app in apps:
        spec = app.openapi()
        for path, ops in spec.get("paths", {}).items():
            for method, op in ops.items():
                if (method, path) in routed:
                    doc["paths"].setdefault(path, {})[method] = op
        for part in ("schemas", "securitySchemes"):
            doc["components"][part].update(spec.get("components", {}).get(part, {}))
    return doc


class Gateway:
    """An ASGI app dispatching (method, path) to the function apps, with /docs and /redoc for the merged API."""

    def __init__(self, routes: list[Route], root: Path) -> None:
        self.routes = routes
        apps: dict[tuple[str, str], Any] = {}
        self._table: dict[tuple[str, str], ASGIApp] = {}
        for r in routes:
            key = (r.code_uri, r.handler)
            if key not in apps:
                apps[key] = load_function_app(root, r.code_uri, r.handler)
            self._table[(r.method, r.path)] = apps[key]
        self.apps = list(apps.values())
        # The methods each path answers, for the Allow header of a 405 (HEAD wherever GET is).
        self._allowed: dict[str, str] = {}
        for path in {r.path for r in routes}:
            methods = {r.method for r in routes if r.path == path}
            methods |= {"HEAD"} if "GET" in methods else set()
            self._allowed[path] = ", ".join(sorted(methods))
        self._openapi: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        app = self._table.get((method, path)) or (self._table.get(("GET", path)) if method == "HEAD" else None)
        if app is not None:
            return await app(scope, receive, send)
        if path == "/openapi.json" and method == "GET":
            if self._openapi is None:
                self._openapi = json.dumps(merged_openapi(self.apps, self.routes)).encode()
            return await self._send(send, 200, self._openapi)
        if path in api_docs.FILES and method in ("GET", "HEAD"):
            headers = dict(scope["headers"])
            if_none_match = headers.get(b"if-none-match")
            page = api_docs.response(path, if_none_match.decode("latin-1") if if_none_match else None)
            return await page(scope, receive, send)
        if path in self._allowed:
            return await self._send(
                send, 405, b'{"detail":"Method Not Allowed"}', [(b"allow", self._allowed[path].encode())]
            )
        await self._send(send, 404, b'{"detail":"Not Found"}')

    @staticmethod
    async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-content-type-options", b"nosniff"),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
