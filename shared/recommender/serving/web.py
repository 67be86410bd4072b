"""What both HTTP functions share: the app factory, FastAPI dependencies, and the one mapping of errors to responses."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Annotated, Any, Awaitable, Callable

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recommender.core.errors import AuthError, InvalidInput, NotFound, RecommenderError
from recommender.core.settings import Settings, get_settings
from recommender.core.storage import Storage, open_storage
from recommender.serving.model import Model, ModelHolder
from recommender.serving.tokens import load_secret, verify_token
from recommender.serving.users import User, UserCache

log = logging.getLogger("recommender")


async def settings() -> Settings:
    """The settings, as a dependency (async: FastAPI would run a plain function in a worker thread per request)."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(settings)]
bearer = OAuth2PasswordBearer(tokenUrl="/token", auto_error=False)


# Process-wide resources, one per distinct settings object: created on first use, never at import,
# so tests that override get_settings get their own.
@lru_cache(maxsize=8)
def _storage(settings: Settings) -> Storage:
    return open_storage(settings)


@lru_cache(maxsize=8)
def _secret(settings: Settings) -> str:
    return load_secret(settings, _storage(settings))


@lru_cache(maxsize=8)
def _user_cache(settings: Settings) -> UserCache:
    return UserCache(_storage(settings), settings.user_cache_seconds)


@lru_cache(maxsize=8)
def model_holder(settings: Settings) -> ModelHolder:
    """The holder of the model this process serves (one per settings)."""
    return ModelHolder(_storage(settings), settings.model_poll_seconds, settings.answer_cache)


def reset_resources() -> None:
    """Forget every cached resource (tests use it between settings)."""
    for cached in (_storage, _secret, _user_cache, model_holder):
        cached.cache_clear()


async def get_storage(settings: SettingsDep) -> Storage:
    """The storage named by the settings."""
    return _storage(settings)


async def get_secret(settings: SettingsDep) -> str:
    """The token signing secret (read once per process)."""
    return await _signing_secret(settings)


async def _signing_secret(settings: Settings) -> str:
    if _secret.cache_info().currsize == 0:
        return await run_in_threadpool(_secret, settings)
    return _secret(settings)


# The two dependencies every recommendation request resolves read the settings themselves rather than through
# sub-dependencies: each level of FastAPI's dependency resolution costs tens of microseconds per request.
async def current_user(token: Annotated[str | None, Depends(bearer)]) -> User:
    """The user a valid bearer token names; AuthError (401) for a missing, bad or expired token or a deleted user."""
    if not token:
        raise AuthError("not authenticated: send Authorization: Bearer <token> (get one from POST /token)")
    settings = get_settings()
    claims = verify_token(token, await _signing_secret(settings), settings.jwt_algorithm)
    cache = _user_cache(settings)
    try:
        return await run_in_threadpool(cache.get, claims.username) if cache.due(claims.username) else cache.get(claims.username)
    except (NotFound, InvalidInput):
        raise AuthError("the user of this token no longer exists") from None
    # Any other failure (the user store unreachable: StorageError) propagates as a 503: never a pass, never a 500.


async def current_model() -> Model:
    """The model to answer with, after looking for a newly activated one when the poll interval has passed."""
    holder = model_holder(get_settings())
    if holder.due():
        await run_in_threadpool(holder.refresh)
    return holder.current()


def json_body(schema: type[BaseModel]) -> Callable[[Request], Awaitable[BaseModel]]:
    """A dependency parsing the request body as JSON into schema, whatever the Content-Type says.

    Clients of the original system sometimes post JSON without the header (curl -d does); pydantic's own
    JSON parser is also faster than FastAPI's default path.
    """
    async def parse(request: Request) -> BaseModel:
        body = await request.body()
        if not body.strip():
            raise InvalidInput("the request body is empty: send a JSON object")
        try:
            return schema.model_validate_json(body)
        except ValidationError as err:
            raise RequestValidationError(err.errors()) from None

    return parse


def json_body_openapi(schema: type[BaseModel]) -> dict:
    """The openapi_extra that documents a json_body parameter."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema.model_json_schema()}}}}


class FastJSON(JSONResponse):
    """A JSON response rendered by orjson: the answer of every recommendation, several microseconds sooner."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


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


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to {"detail": "..."} with the right status; nothing escapes as a bare 500."""

    @app.exception_handler(RecommenderError)
    async def domain_error(_request: Request, err: RecommenderError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(err, AuthError) else None
        if err.status_code >= 500:
            log.error("%s", err.message)
        return _error(err.status_code, err.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, describe_validation_error(list(err.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, "internal error")


class BodyLimit:
    """Refuse request bodies over MAX_BODY_BYTES with 413, whether or not they announce their length."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = get_settings().max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await self._refuse(send)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = _error(413, f"request body is larger than the limit of {get_settings().max_body_bytes} bytes")
        await response({"type": "http"}, _no_body, send)


class _TooLarge(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def create_app(title: str, description: str) -> FastAPI:
    """A FastAPI app with the shared error mapping and body limit; each function adds its routes."""
    app = FastAPI(title=title, description=description, version="1.0")
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    return app
