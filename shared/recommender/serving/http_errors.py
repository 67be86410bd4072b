"""The one mapping of errors to HTTP responses ({"detail": "..."} with the right status, never a bare 500, never a
storage address), and their documentation in the OpenAPI document."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from recommender.core.errors import AuthError, Busy, NotFound, RecommenderError, StorageError
from recommender.serving.callers import client_address
from recommender.serving.middleware import SECURITY_HEADERS
from recommender.serving.schemas import ErrorOut, error_json

log = logging.getLogger("recommender")


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_json(detail), status_code=status, headers=headers)


# What each error status means, for the OpenAPI document (docs/api.md, "Errors", says the same).
ERROR_MEANINGS = {
    400: "the form body cannot be parsed",
    401: "missing, malformed, expired, forged or revoked token or API key, a deleted user, or bad credentials",
    403: "an API key without the scope of this route, from an origin it does not list, or on a route for users only; "
    "a user whose role lacks the right a change needs (the detail names it)",
    404: "what was asked for does not exist (e.g. a model trained before it kept sample invoices)",
    409: "another change came first (the rules or model pointer moved meanwhile), or the activation gate refused "
    "a model: the detail says which",
    413: "the request body is larger than MAX_BODY_BYTES (EVENTS_MAX_BODY_BYTES for /events)",
    422: "malformed request: the detail names the field and the problem",
    429: "too many failed logins from this client address, or an API key over its rate; retry after Retry-After "
    "seconds",
    503: "no model can be served, the storage cannot be reached, logins are at capacity, or events cannot be stored "
    "(the last two with Retry-After)",
}
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    503: {
        "Retry-After": {
            "description": "seconds to wait (when logins are at capacity, or events cannot be stored)",
            "schema": {"type": "integer"},
        }
    },
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that can answer these error statuses, each with a {"detail": "..."} body."""
    return {
        status: {
            "model": ErrorOut,
            "description": ERROR_MEANINGS[status],
            **({"headers": _ERROR_HEADERS[status]} if status in _ERROR_HEADERS else {}),
        }
        for status in statuses
    }


def describe_validation_error(errors: list[dict[str, Any]]) -> str:
    """One readable line for pydantic's error list, e.g. "n: Input should be less than or equal to 100"."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            parts.append(f"request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
            continue
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "form")]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


# Where things are stored is for the operator (the log, the CLI), never for an HTTP client: storage URLs (s3://..., an
# S3 endpoint) and absolute paths in a message become "the storage".
_ADDRESS = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\";,]*|(?<![\w.:/~-])/[^\s'\":;,]+", re.IGNORECASE)


def public_text(text: str) -> str:
    """text with every storage URL and absolute path replaced by "the storage"."""
    return _ADDRESS.sub("the storage", text)


def public_detail(err: RecommenderError) -> str:
    """What an HTTP client is told of err: what is wrong, never where it is stored (the log keeps the message)."""
    if err.status_code < 500 and not isinstance(err, NotFound):
        # About the request (its fields, origin, key, route): a "/" or "https://" there is the client's own. A
        # NotFound may come from the storage itself ("<key> not found in s3://..."), so it is cleaned like a 5xx.
        return err.message
    return public_text((err.public if isinstance(err, StorageError) else None) or err.message)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to {"detail": "..."} with the right status; nothing escapes as a bare 500."""

    @app.exception_handler(RecommenderError)
    async def domain_error(_request: Request, err: RecommenderError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, AuthError) else {}
        if getattr(err, "retry_after", None) is not None:
            headers["Retry-After"] = str(err.retry_after)
        if err.status_code >= 500 and not isinstance(err, Busy):
            log.error("%s", err.message)  # a busy login pool is logged by the login's own line
        return _error(err.status_code, public_detail(err), headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, describe_validation_error(list(err.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, _err: ClientDisconnect) -> Response:
        # The client closed its connection before its whole request arrived (a load generator stopping, a browser
        # tab closed): nobody is left to answer and nothing went wrong here (found by make soak).
        log.info("client %s closed the connection before its request was read", client_address(request))
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error")
        # Sent from outside every middleware (Starlette's last resort), so it carries its own security header.
        return _error(500, "internal error", dict(SECURITY_HEADERS))
