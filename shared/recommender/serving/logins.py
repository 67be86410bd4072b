"""Logins: password guessing throttled, password checks in their own bounded pool, one log line per attempt."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from recommender.core.errors import AuthError, Busy, InvalidInput, RecommenderError, TooManyRequests
from recommender.core.settings import Settings
from recommender.core.storage import Storage
from recommender.serving.tokens import issue_token
from recommender.serving.users import PASSWORD_CONTROL, authenticate, has_control

audit = logging.getLogger("recommender.auth")
T = TypeVar("T")

THROTTLED = "too many failed logins from this client: try again later (see Retry-After)"
BUSY = "too many logins in progress: try again in a moment"


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

    def failures(self, address: str) -> int:
        """How many logins from address count as failed in the window now (those in progress included)."""
        with self._lock:
            return len(self._recent(("address", address), self.clock()))

    def succeeded(self, username: str, address: str, stamp: float) -> None:
        """A login that began at stamp succeeded: the user name's count from this address starts again."""
        with self._lock:
            self._failures.pop(("user", f"{username.lower()}\0{address}"), None)
            self._drop(("address", address), stamp)

    def cancel(self, username: str, address: str, stamp: float) -> None:
        """A login that began at stamp could not check a password (the storage is down): it does not count. (One
        turned away as busy does: a flood would never be throttled otherwise.)"""
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


@dataclass(eq=False)
class _Check:
    """One password check waiting for a thread."""

    source: str
    due: int  # the round of fair queueing it is due in
    seq: int
    call: Callable[[], Any]
    future: Future = field(default_factory=Future)


class PasswordPool:
    """The threads that check passwords: bcrypt runs here, never in the pool that serves other requests.

    At most `workers` checks run at once (at a lower CPU priority where the OS allows it) and `queue` more wait.
    Waiting checks are served by source (the client address): sources of a lower `weight` first (their failed
    logins, counted now rather than when the check arrived; every waiting check counts, so a source's n-th waiting
    check weighs at least n), and among sources of one weight by start-time fair queueing: a source's n-th check is
    due n rounds from now. A client whose only failed login is the one in progress is thus behind at most one check
    of each other source, and behind none of a source that failed more. When every place is taken, the check due
    last (highest weight, latest round, newest) is turned away with Busy: the new one, or a waiting one it outranks.
    """

    def __init__(
        self, workers: int, queue: int, nice: int = 0, weight: Callable[[str], int] = lambda _source: 0
    ) -> None:
        self.capacity = workers + max(0, queue)
        self.nice = nice
        self.weight = weight
        self._waiting: list[_Check] = []  # a few dozen at most (the queue bound): scanned, not heaped
        self._running = 0
        self._round = 0  # the round of the check started last
        self._next_due: dict[str, int] = {}  # per source with checks admitted lately: the round of its next one
        self._seq = itertools.count()
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

    async def run(self, fn: Callable[..., T], *args: object, source: str = "") -> T:
        """fn(*args) on one of the pool's threads, queued fairly by source; Busy when it is turned away (at once,
        or later by a check that outranks it)."""
        check = self._admit(source, lambda: fn(*args))
        try:
            return await asyncio.wrap_future(check.future)
        except asyncio.CancelledError:
            with self._lock:  # the client left: its place is free again
                if check in self._waiting:
                    self._waiting.remove(check)
            raise

    def _order(self, weights: dict[str, int]) -> Callable[[_Check], tuple[int, int, int]]:
        """The order checks are served in, with each source's weight looked up once per decision."""

        def order(check: _Check) -> tuple[int, int, int]:
            if check.source not in weights:
                weights[check.source] = self.weight(check.source)
            return weights[check.source], check.due, check.seq

        return order

    def _admit(self, source: str, call: Callable[[], Any]) -> _Check:
        with self._lock:
            due = max(self._round, self._next_due.get(source, self._round))
            check = _Check(source, due, next(self._seq), call)
            if self._running + len(self._waiting) >= self.capacity:
                order = self._order({})
                last = max(self._waiting, key=order, default=None)
                if last is None or order(last) < order(check):
                    raise Busy(BUSY, retry_after=1)
                self._waiting.remove(last)
                if not last.future.done():  # cancelled: its client left, and its request is ending anyway
                    last.future.set_exception(Busy(BUSY, retry_after=1))
            self._next_due[source] = due + 1
            if len(self._next_due) > 4 * self.capacity + 1024:
                self._forget_idle_sources()
            self._waiting.append(check)
        # One run per admitted check; the check it runs is chosen when a thread is free, not now.
        self._pool.submit(self._run_next)
        return check

    def _forget_idle_sources(self) -> None:
        # A source due no later than the current round is due now anyway: forgetting it changes nothing.
        self._next_due = {s: due for s, due in self._next_due.items() if due > self._round}

    def _run_next(self) -> None:
        while True:
            with self._lock:
                check = min(self._waiting, key=self._order({}), default=None)
                if check is None:
                    return  # turned away or cancelled meanwhile
                self._waiting.remove(check)
                if not check.future.set_running_or_notify_cancel():
                    continue
                self._round = check.due
                self._running += 1
            try:
                check.future.set_result(check.call())
            except BaseException as err:  # handed to the waiting request, which maps it
                check.future.set_exception(err)
            finally:
                with self._lock:
                    self._running -= 1
            return

    def shutdown(self) -> None:
        """Stop the threads once the checks in progress are done; waiting ones are turned away."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for check in waiting:
            if not check.future.done():
                check.future.set_exception(Busy(BUSY, retry_after=1))
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
        # Queued fairly by client address, those with fewer failed logins first.
        self.pool = PasswordPool(
            settings.login_workers, settings.login_queue, settings.login_nice, weight=self.throttle.failures
        )

    async def login(self, username: str, password: str, address: str, secret: str) -> str:
        """A token for the user whose password matches; AuthError (401), TooManyRequests (429), Busy (503), or
        InvalidInput (422) for a password no account can have."""
        if has_control(password):
            raise InvalidInput(PASSWORD_CONTROL)  # a pasted newline, most likely: say so rather than "incorrect"
        try:
            began = self.throttle.begin(username, address)
        except TooManyRequests:
            log_attempt(username, address, "throttled")
            raise
        try:
            user = await self.pool.run(
                authenticate,
                self.storage,
                username,
                password,
                self.settings.bcrypt_rounds,
                source=address,
            )
        except AuthError:
            log_attempt(username, address, "failure")
            raise
        except Busy:
            # Counted like a failure (begin already did): a source flooding the pool is throttled like a guesser.
            log_attempt(username, address, "busy")
            raise
        except RecommenderError:
            self.throttle.cancel(username, address, began)
            log_attempt(username, address, "unavailable")
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
