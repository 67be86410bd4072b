"""The app factory both HTTP functions use (the error mapping, body limit and security headers installed), and
routes answered without FastAPI's dependency resolver.

The HTTP layer's parts live in modules of their own: serving.resources (process-wide resources and their
dependencies), serving.callers (tokens, roles and API keys), serving.json_bodies (JSON in and out),
serving.http_errors (errors to responses) and serving.middleware. The names many modules use are re-exported here,
so that routes and functions keep writing `web.<name>`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from recommender.serving.callers import require
from recommender.serving.http_errors import errors, install_error_handlers
from recommender.serving.json_bodies import FastJSON, json_body, json_body_openapi
from recommender.serving.middleware import BodyLimit, Headers
from recommender.serving.resources import SettingsDep, current_model, model_holder, reset_resources

__all__ = [
    "NO_TELEMETRY",
    "App",
    "FastJSON",
    "SettingsDep",
    "create_app",
    "current_model",
    "errors",
    "json_body",
    "json_body_openapi",
    "model_holder",
    "post_resolved",
    "require",
    "reset_resources",
    "resolved_by",
]


def resolved_by(handler: Callable[[Request], Awaitable[Response]]) -> type[APIRoute]:
    """A route class whose requests handler(request) answers, without FastAPI's dependency resolver.

    The endpoint keeps its declared dependencies, which document the route (security scheme, OpenAPI); handler
    calls the same dependency functions in the same order, then the endpoint. FastAPI's resolver costs some
    60 µs a request for the three dependencies of a recommendation, a third of the app's own time.
    """

    class ResolvedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            return handler

    return ResolvedRoute


def post_resolved(
    app: FastAPI, path: str, handler: Callable[[Request], Awaitable[Response]], **options: Any
) -> Callable[[Callable], Callable]:
    """Like @app.post(path, **options), with requests answered by handler (resolved_by)."""

    def register(endpoint: Callable) -> Callable:
        app.router.add_api_route(path, endpoint, methods=["POST"], route_class_override=resolved_by(handler), **options)
        return endpoint

    return register


NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


class App(FastAPI):
    """A FastAPI app whose fast_routes, {(method, path): ASGI app}, answer their requests ahead of the whole app
    (serving.fast_path); every other request goes through the whole app (full)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.fast_routes: dict[tuple[str, str], ASGIApp] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            fast = self.fast_routes.get((scope["method"], scope["path"]))
            if fast is not None:
                return await fast(scope, receive, send)
        await super().__call__(scope, receive, send)

    async def full(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request answered by the whole app: its middleware, router and routes."""
        await super().__call__(scope, receive, send)


def create_app(title: str, description: str, no_store: bool = False) -> App:
    """A FastAPI app with the shared error mapping, body limit and headers; each function adds its routes.

    no_store: every answer carries Cache-Control: no-store (the auth function's tokens and user details).
    """
    # No /docs or /redoc of FastAPI's (pages loading their code from a CDN): the local server serves both from
    # its own files for the whole API (local.api_docs).
    options: dict[str, Any] = {"title": title, "description": description, "version": "1.0"}
    options |= {"docs_url": None, "redoc_url": None}
    try:
        # The service configures no OpenTelemetry; FastAPI's own (in recent releases) would look for providers in the
        # environment on every request otherwise, 10-20 µs each time.
        app = App(**options, telemetry=NO_TELEMETRY)
    except TypeError:  # a FastAPI without native telemetry
        app = App(**options)
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(Headers, no_store=no_store)  # added last: outermost, so the 413s get the headers too
    return app
