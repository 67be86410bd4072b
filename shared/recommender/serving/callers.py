"""Who calls: the user a bearer token names (with the rights of their role), or an API key checked for its scope,
origin and rate; as FastAPI dependencies and as plain functions for routes answered without FastAPI's resolver."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from starlette.concurrency import run_in_threadpool

from recommender.core.errors import AuthError, Forbidden, InvalidInput, NotFound
from recommender.core.settings import get_settings
from recommender.serving.keys import ALL_SCOPES, KEY_PREFIX, SCOPES, Caller
from recommender.serving.resources import key_cache, signing_secret, user_cache
from recommender.serving.tokens import verify_token
from recommender.serving.users import User

bearer = OAuth2PasswordBearer(tokenUrl="/token", auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (make add_key)")


def client_address(request: Request) -> str:
    """The address of the client that sent the request (on Lambda, API Gateway's sourceIp)."""
    return request.client.host if request.client and request.client.host else "unknown"


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
    claims = verify_token(token, await signing_secret(settings), settings.jwt_algorithm)
    cache = user_cache(settings)
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
