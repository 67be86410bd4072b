"""Process-wide resources, one per settings object (storage, token secret, users, model holder, event intake, logins,
API keys), created on first use and never at import, and the FastAPI dependencies that hand them out."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import TYPE_CHECKING, Annotated, TypeVar

from fastapi import Depends
from starlette.concurrency import run_in_threadpool

from recommender.core.settings import Settings, get_settings
from recommender.core.storage import Storage, open_storage
from recommender.serving.arms import ExperimentHolder, arm_of
from recommender.serving.keys import KeyCache
from recommender.serving.model import Model
from recommender.serving.tokens import SECRET_RECHECK_SECONDS, SecretHolder
from recommender.serving.users import UserCache

if TYPE_CHECKING:  # imported on first use: the recommend function never logs anyone in
    from recommender.serving.events import Ingest
    from recommender.serving.logins import Logins

T = TypeVar("T")


async def settings() -> Settings:
    """The settings, as a dependency (async: FastAPI would run a plain function in a worker thread per request)."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(settings)]


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
def user_cache(settings: Settings) -> UserCache:
    """The users this process knows, re-read every USER_CACHE_SECONDS (one cache per settings)."""
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
    for cached in (_storage, _secret, user_cache, model_holder, event_ingest, key_cache):
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


async def get_secret(settings: SettingsDep) -> str:
    """The token signing secret (read once per process)."""
    return await signing_secret(settings)


async def signing_secret(settings: Settings) -> str:
    """The token signing secret, read again when it is due (get_secret without the dependency)."""
    holder = _secret(settings)
    if holder.due():
        return await run_in_threadpool(holder.current)
    return holder.value  # type: ignore[return-value]  # due() is False only once it holds one


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
