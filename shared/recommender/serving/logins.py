"""Logins: password guessing throttled, password checks in their own bounded pool, one log line per attempt."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from recommender.core.errors import AuthError, Busy, RecommenderError, TooManyRequests
from recommender.core.settings import Settings
from recommender.core.storage import Storage
from recommender.serving.tokens import issue_token
from recommender.serving.users import authenticate

audit = logging.getLogger("recommender.auth")
T = TypeVar("T")

THROTTLED = "too many failed logins from this client: try again later (see Retry-After)"


class LoginThrottle:
    """Counts failed logins per (user name, client address) and per address in a sliding window.

    A login is counted as failed from the moment it starts (released if it succeeds or never ran), so that
    concurrent guesses cannot slip past the limit together. Counts live in this process only.
    """

    def __init__(
        self,
        per_user: int,
        per_address: int,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window = window_seconds
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def begin(self, username: str, address: str) -> float:
        """Count one attempt as failed and return its stamp; TooManyRequests if a limit is already reached."""
        user_key, address_key = ("user", f"{username.lower()}\0{address}"), ("address", address)
        with self._lock:
            now = self.clock()
            waits = [
                times[-limit] + self.window - now
                for key, limit in ((user_key, self.per_user), (address_key, self.per_address))
                if len(times := self._recent(key, now)) >= limit
            ]
            if waits:
                raise TooManyRequests(THROTTLED, retry_after=max(1, math.ceil(max(waits))))
            if len(self._failures) + 2 > self.max_keys:
                self._forget_oldest(now)
            for key in (user_key, address_key):
                self._failures.setdefault(key, deque()).append(now)
            return now

    def succeeded(self, username: str, address: str, stamp: float) -> None:
        """A login that began at stamp succeeded: the user name's count from this address starts again."""
        with self._lock:
            self._failures.pop(("user", f"{username.lower()}\0{address}"), None)
            self._drop(("address", address), stamp)

    def cancel(self, username: str, address: str, stamp: float) -> None:
        """A login that began at stamp never checked a password (busy, storage down): it does not count."""
        with self._lock:
            self._drop(("user", f"{username.lower()}\0{address}"), stamp)
            self._drop(("address", address), stamp)

    def _drop(self, key: tuple[str, str], stamp: float) -> None:
        times = self._failures.get(key)
        if times is not None:
            try:
                times.remove(stamp)
            except ValueError:
                pass
            if not times:
                del self._failures[key]

    def _forget_oldest(self, now: float) -> None:
        # Bounded memory whatever the number of names and addresses tried: expired entries go first, then the
        # oldest keys (dicts keep insertion order), down to three quarters of the bound so this runs rarely.
        for key in list(self._failures):
            self._recent(key, now)
        excess = len(self._failures) - self.max_keys * 3 // 4
        for key in list(self._failures)[: max(0, excess)]:
            del self._failures[key]


class PasswordPool:
    """The threads that check passwords: bcrypt runs here, never in the pool that serves other requests.

    At most `workers` checks run at once (at a lower CPU priority where the OS allows it) and `queue` more wait;
    beyond that, run() raises Busy at once instead of letting logins pile up.
    """

    def __init__(self, workers: int, queue: int, nice: int = 0) -> None:
        self.capacity = workers + max(0, queue)
        self.nice = nice
        self._pending = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="password-check", initializer=self._lower_priority)

    def _lower_priority(self) -> None:
        # On Linux a thread has its own niceness: the checks then yield the CPU to the threads answering requests.
        # Only ever lowered (never above the process's own priority, even for root).
        if self.nice > 0 and hasattr(os, "setpriority"):
            try:
                me = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, me, max(self.nice, os.getpriority(os.PRIO_PROCESS, me)))
            except OSError:
                pass

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """fn(*args) on one of the pool's threads; Busy when every thread and queue slot is taken."""
        with self._lock:
            if self._pending >= self.capacity:
                raise Busy("too many logins in progress: try again in a moment", retry_after=1)
            self._pending += 1
        try:
            return await asyncio.wrap_future(self._pool.submit(fn, *args))
        finally:
            with self._lock:
                self._pending -= 1

    def shutdown(self) -> None:
        """Stop the threads once the checks in progress are done."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def log_attempt(username: str, address: str, outcome: str) -> None:
    """One JSON line per login attempt; the user name is cut to 64 characters and escaped, never a password."""
    if audit.level == logging.NOTSET:
        audit.setLevel(logging.INFO)  # Lambda's root logger drops INFO: this line is wanted wherever it runs
    audit.info(json.dumps({"event": "login", "username": username[:64], "client": address, "outcome": outcome}))


class Logins:
    """Exchanges a user name and password for a token, with the throttle and the pool of this process."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.throttle = LoginThrottle(
            settings.login_failures_per_user, settings.login_failures_per_address, settings.login_window_seconds
        )
        self.pool = PasswordPool(settings.login_workers, settings.login_queue, settings.login_nice)

    async def login(self, username: str, password: str, address: str, secret: str) -> str:
        """A token for the user whose password matches; AuthError (401), TooManyRequests (429) or Busy (503)."""
        try:
            began = self.throttle.begin(username, address)
        except TooManyRequests:
            log_attempt(username, address, "throttled")
            raise
        try:
            user = await self.pool.run(authenticate, self.storage, username, password, self.settings.bcrypt_rounds)
        except AuthError:
            log_attempt(username, address, "failure")
            raise
        except RecommenderError as err:
            self.throttle.cancel(username, address, began)
            log_attempt(username, address, "busy" if isinstance(err, Busy) else "unavailable")
            raise
        except BaseException:
            self.throttle.cancel(username, address, began)
            log_attempt(username, address, "error")
            raise
        self.throttle.succeeded(username, address, began)
        log_attempt(username, address, "success")
        return issue_token(
            user.username, secret, self.settings.jwt_algorithm, self.settings.token_minutes, stamp=user.stamp
        )
