"""What both HTTP functions share: the app factory, FastAPI dependencies, and the one mapping of errors to responses."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Awaitable, Callable
from functools import lru_cache, wraps
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recommender.core.errors import AuthError, Busy, Forbidden, InvalidInput, NotFound, RecommenderError, StorageError
from recommender.core.settings import Settings, get_settings
from recommender.core.storage import Storage, open_storage
from recommender.serving.arms import ExperimentHolder, arm_of
from recommender.serving.keys import ALL_SCOPES, KEY_PREFIX, SCOPES, Caller, KeyCache
from recommender.serving.model import Model
from recommender.serving.schemas import ErrorOut, error_json
from recommender.serving.tokens import SECRET_RECHECK_SECONDS, SecretHolder, verify_token
from recommender.serving.users import User, UserCache

if TYPE_CHECKING:  # imported on first use: the recommend function never logs anyone in
    from recommender.serving.events import Ingest
    from recommender.serving.logins import Logins

log = logging.getLogger("recommender")
T = TypeVar("T")


async def settings() -> Settings:
    """The settings, as a dependency (async: FastAPI would run a plain function in a worker thread per request)."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(settings)]
bearer = OAuth2PasswordBearer(tokenUrl="/token", auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (make add_key)")


def _per_settings(make: Callable[[Settings], T]) -> Callable[[Settings], T]:
    """lru_cache(maxsize=8) of a function of the settings, with the settings object met last answered without
    hashing it: a request looks up three resources, and hashing the settings (a dataclass of some 40 fields) costs
    a few µs each time."""
    cached = lru_cache(maxsize=8)(make)
    last: list[tuple[Settings, T] | None] = [None]  # one (settings, value) pair, replaced as a whole

    @wraps(make)
    def get(settings: Settings) -> T:
        hit = last[0]
        if hit is not None and hit[0] is settings:
            return hit[1]
        value = cached(settings)
        last[0] = (settings, value)
        return value

    def cache_clear() -> None:
        last[0] = None
        cached.cache_clear()

    get.cache_clear = cache_clear  # type: ignore[attr-defined]
    get.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return get


# Process-wide resources, one per distinct settings object: created on first use, never at import,
# so tests that override get_settings get their own.
@_per_settings
def _storage(settings: Settings) -> Storage:
    return open_storage(settings)


@_per_settings
def _secret(settings: Settings) -> SecretHolder:
    # Looked at again as often as the users are (replacing the secret revokes every token, as deleting a user does),
    # but not on every request when USER_CACHE_SECONDS is 0.
    return SecretHolder(settings, _storage(settings), max(settings.user_cache_seconds, SECRET_RECHECK_SECONDS))


@_per_settings
def _user_cache(settings: Settings) -> UserCache:
    return UserCache(_storage(settings), settings.user_cache_seconds)


@_per_settings
def model_holder(settings: Settings) -> ExperimentHolder:
    """The holder of the model this process serves, and of the running experiment's (one per settings)."""
    return ExperimentHolder(_storage(settings), settings.model_poll_seconds, settings.answer_cache)


@_per_settings
def event_ingest(settings: Settings) -> Ingest:
    """This process's intake of events (POST /events): its event log and the ids it stored lately."""
    from recommender.core.event_log import open_event_log
    from recommender.serving.events import Ingest

    if settings.events_firehose_stream:
        from recommender.core.event_firehose import firehose_event_log

        return Ingest(firehose_event_log(settings), settings)
    return Ingest(open_event_log(_storage(settings)), settings)


# The login throttle and password pool of each settings object (a dict rather than lru_cache: the pools' threads
# are shut down when tests reset the resources).
_logins_by_settings: dict[Settings, Logins] = {}
_logins_lock = threading.Lock()


def _logins(settings: Settings) -> Logins:
    from recommender.serving.logins import Logins

    with _logins_lock:
        logins = _logins_by_settings.get(settings)
        if logins is None:
            logins = _logins_by_settings[settings] = Logins(settings, _storage(settings))
        return logins


@_per_settings
def key_cache(settings: Settings) -> KeyCache:
    """The API keys this process accepts (one cache per settings), re-read every MODEL_POLL_SECONDS."""
    return KeyCache(_storage(settings), settings.model_poll_seconds)


def reset_resources() -> None:
    """Forget every cached resource (tests use it between settings)."""
    for cached in (_storage, _secret, _user_cache, model_holder, event_ingest, key_cache):
        cached.cache_clear()
    with _logins_lock:
        for logins in _logins_by_settings.values():
            logins.pool.shutdown()
        _logins_by_settings.clear()


async def get_storage(settings: SettingsDep) -> Storage:
    """The storage named by the settings."""
    return _storage(settings)


async def get_logins(settings: SettingsDep) -> Logins:
    """This process's logins: the throttle and the password-check pool."""
    return _logins(settings)


def client_address(request: Request) -> str:
    """The address of the client that sent the request (on Lambda, API Gateway's sourceIp)."""
    return request.client.host if request.client and request.client.host else "unknown"


async def get_secret(settings: SettingsDep) -> str:
    """The token signing secret (read once per process)."""
    return await _signing_secret(settings)


async def _signing_secret(settings: Settings) -> str:
    holder = _secret(settings)
    if holder.due():
        return await run_in_threadpool(holder.current)
    return holder.value  # type: ignore[return-value]  # due() is False only once it holds one


# The two dependencies every recommendation request resolves read the settings themselves rather than through
# sub-dependencies: each level of FastAPI's dependency resolution costs tens of microseconds per request.
async def current_user(request: Request, token: Annotated[str | None, Depends(bearer)]) -> User:
    """The user a valid bearer token names; AuthError (401) for a missing, bad or expired token or a deleted user,
    Forbidden (403) for an API key: keys reach only the routes of their scopes."""
    if not token or token.startswith(KEY_PREFIX):
        if token or "x-api-key" in request.headers:
            raise Forbidden(f"an API key cannot call {request.url.path}: it needs a user's token (POST /token)")
        raise AuthError("not authenticated: send Authorization: Bearer <token> (get one from POST /token)")
    return await _token_user(token)


async def _token_user(token: str) -> User:
    settings = get_settings()
    claims = verify_token(token, await _signing_secret(settings), settings.jwt_algorithm)
    cache = _user_cache(settings)
    try:
        user = (
            await run_in_threadpool(cache.get, claims.username)
            if cache.due(claims.username)
            else cache.get(claims.username)
        )
    except (NotFound, InvalidInput):
        raise AuthError("the user of this token no longer exists") from None
    # Any other failure (the user store unreachable: StorageError) propagates as a 503: never a pass, never a 500.
    if claims.stamp != user.stamp:
        # Issued to an earlier account of that name, or before the password changed.
        raise AuthError("this token was revoked (the password changed or the account was re-created): log in again")
    return user


def require(right: str) -> Callable[..., Awaitable[User]]:
    """A dependency: the user of the bearer token (current_user), if their stored role carries right; Forbidden
    (403) naming the missing right otherwise. The role is the stored user's (UserCache), never the token's."""
    from recommender.serving.users import RIGHT_MEANINGS

    if right not in RIGHT_MEANINGS:
        raise ValueError(f"unknown right {right!r}")

    async def dependency(request: Request, token: Annotated[str | None, Depends(bearer)]) -> User:
        user = await current_user(request, token)
        if not user.may(right):
            raise Forbidden(
                f"the right {right!r} ({RIGHT_MEANINGS[right]}) is missing: user {user.username!r} is a "
                f"{user.role}; an admin can change that (make set_role)"
            )
        return user

    return dependency


async def request_user(request: Request) -> User:
    """current_user for the bearer token of a request's Authorization header (what Depends(bearer) gives it)."""
    return await current_user(request, await bearer(request))


# What a user's token may do: everything a key can, and the rest. One object, not one per request.
_USERS: dict[str, Caller] = {}


async def request_caller(request: Request, scope: str) -> Caller:
    """Who sends a request to a route of scope: an API key (X-API-Key, or Authorization: Bearer rk_...) checked
    for its scope, origin and rate, or a user's bearer token exactly as current_user checks it."""
    headers = request.headers
    return await caller_of(
        scope, request.scope["path"], headers.get("authorization"), headers.get("x-api-key"), headers.get("origin")
    )


async def caller_of(
    scope: str, path: str, authorization: str | None, key: str | None, origin: str | None = None
) -> Caller:
    """request_caller for a request to path with these headers (None: absent)."""
    if key is None:
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise AuthError(
                "not authenticated: send X-API-Key: <key> (make add_key) or Authorization: Bearer <token> "
                "(get one from POST /token)"
            )
        if not value.startswith(KEY_PREFIX):
            user = await _token_user(value)
            caller = _USERS.get(user.username)
            if caller is None:
                caller = _USERS.setdefault(user.username, Caller("user", user.username, ALL_SCOPES))
            return caller
        key = value
    cache = key_cache(get_settings())
    if cache.due():
        await run_in_threadpool(cache.refresh)
    # The path from the scope: request.url would build a URL object, several µs, for an error message.
    return cache.check(key, scope, origin, path)


def caller(scope: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the Caller of a route of scope (request_caller), documented with both ways to authorize."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(
        request: Request,
        _token: Annotated[str | None, Depends(bearer)],
        _key: Annotated[str | None, Depends(api_key_header)],
    ) -> Caller:
        return await request_caller(request, scope)

    return dependency


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


async def current_model() -> Model:
    """The model to answer with, after looking for a newly activated one when the poll interval has passed."""
    holder = model_holder(get_settings())
    if holder.due():
        await run_in_threadpool(holder.refresh)
    return holder.current()


def experiment_arm(model: Model, unit: str | None) -> tuple[Model, str | None]:
    """The model answering a request of the shopper unit (user or session id, None when the request gives neither)
    and their experiment arm; with no experiment running, model and no arm."""
    return arm_of(model_holder(get_settings()).routing, model, unit)


def json_body(schema: type[BaseModel]) -> Callable[[Request], Awaitable[BaseModel]]:
    """A dependency parsing the request body as JSON into schema, whatever the Content-Type says.

    Clients of the original system sometimes post JSON without the header (curl -d does); pydantic's own
    JSON parser is also faster than FastAPI's default path.
    """

    async def parse(request: Request) -> BaseModel:
        return parse_json(schema, await request.body())

    return parse


def parse_json(schema: type[T], body: bytes) -> T:
    """body parsed as JSON into schema (a pydantic model); InvalidInput when empty, RequestValidationError (422)
    when it does not fit."""
    if not body.strip():
        raise InvalidInput("the request body is empty: send a JSON object")
    try:
        return schema.model_validate_json(body)  # type: ignore[attr-defined]
    except ValidationError as err:
        raise RequestValidationError(err.errors()) from None


def json_body_openapi(schema: type[BaseModel]) -> dict:
    """The openapi_extra that documents a json_body parameter (nested models inlined: a `#/$defs/...` reference would
    point nowhere in the OpenAPI document)."""
    document = schema.model_json_schema()
    definitions = document.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(document)}}}}


class FastJSON(JSONResponse):
    """A JSON response rendered by orjson (the answer of every recommendation, several microseconds sooner), or by
    pydantic for a response model (validated as it was built)."""

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            return content.__pydantic_serializer__.to_json(content)
        return orjson.dumps(content)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_json(detail), status_code=status, headers=headers)


# What each error status means, for the OpenAPI document (README "HTTP API" says the same).
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


FEED_UPLOADS = ("/feed", "/feed/preview")


def body_limit(path: str, settings: Settings) -> int:
    """The largest request body a path takes: EVENTS_MAX_BODY_BYTES for /events (batches), FEED_UPLOAD_MAX_BYTES
    for the console's feed upload, else MAX_BODY_BYTES."""
    if path == "/events":
        return settings.events_max_body_bytes
    return settings.feed_upload_max_bytes if path in FEED_UPLOADS else settings.max_body_bytes


class BodyLimit:
    """Refuse request bodies over the path's limit (body_limit) with 413, whether or not they announce their length."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope.get("path", ""), get_settings())
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await self._refuse(send, limit)
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
            await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        await too_large(limit)({"type": "http"}, _no_body, send)


def too_large(limit: int) -> JSONResponse:
    """The 413 answer to a body over limit bytes."""
    return _error(413, f"request body is larger than the limit of {limit} bytes")


class _TooLarge(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff"}


class Headers:
    """Adds the security headers to every response (and Cache-Control: no-store where asked), and answers HEAD
    like GET without a body (the servers drop it) on every GET route."""

    def __init__(self, app: ASGIApp, no_store: bool = False) -> None:
        self.app = app
        self.extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        if no_store:
            # Tokens and who a token belongs to must not be kept by browsers or proxies (RFC 6749, section 5.1).
            self.extra += [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = self.extra

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        if scope["method"] == "HEAD":
            # uvicorn and API Gateway see the request as HEAD and send no body; the routes see a GET.
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send_with_headers)


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
