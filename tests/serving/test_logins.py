"""Logins: the guessing throttle, the bounded password-check pool, and the log line of each attempt."""

import asyncio
import json
import logging
import threading

import pytest

from recommender.core.errors import AuthError, Busy, InvalidInput, TooManyRequests
from recommender.core.settings import Settings
from recommender.serving.logins import Logins, LoginThrottle, PasswordPool
from recommender.serving.tokens import verify_token
from recommender.serving.users import add_user

SECRET = "s" * 48


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, user: str, address: str, times: int = 1) -> None:
    for _ in range(times):
        throttle.begin(user, address)  # counted as failed until it succeeds


def test_sixth_failure_for_a_user_from_one_address_is_refused_until_the_window_moves():
    clock = Clock()
    throttle = LoginThrottle(5, 50, 900, clock)
    fail(throttle, "alice", "10.0.0.1", 5)
    clock.now += 100
    with pytest.raises(TooManyRequests) as refused:
        throttle.begin("alice", "10.0.0.1")
    assert refused.value.retry_after == 800
    with pytest.raises(TooManyRequests):
        throttle.begin("ALICE", "10.0.0.1")  # names are case-insensitive, so is their count
    throttle.begin("alice", "10.0.0.2")  # another address
    throttle.begin("bob", "10.0.0.1")  # another user
    clock.now += 800
    throttle.begin("alice", "10.0.0.1")  # the first failure left the window


def test_fifty_failures_from_one_address_block_every_name():
    clock = Clock()
    throttle = LoginThrottle(5, 50, 900, clock)
    for i in range(50):
        throttle.begin(f"user{i}", "10.0.0.9")
    with pytest.raises(TooManyRequests) as refused:
        throttle.begin("someone-new", "10.0.0.9")
    assert refused.value.retry_after == 900
    throttle.begin("someone-new", "10.0.0.10")


def test_a_success_clears_the_users_count_but_not_the_addresses():
    throttle = LoginThrottle(5, 7, 900, Clock())
    fail(throttle, "alice", "a", 4)
    throttle.succeeded("alice", "a", throttle.begin("alice", "a"))
    fail(throttle, "alice", "a", 2)  # counting starts again for alice ...
    throttle.begin("bob", "a")
    with pytest.raises(TooManyRequests):
        throttle.begin("carol", "a")  # ... but not the address's: 4 + 2 + bob's 1 = 7 failures


def test_cancelled_attempts_do_not_count():
    throttle = LoginThrottle(2, 50, 900, Clock())
    for _ in range(5):
        throttle.cancel("alice", "a", throttle.begin("alice", "a"))
    fail(throttle, "alice", "a", 2)


def test_memory_stays_bounded_whatever_is_tried():
    clock = Clock()
    throttle = LoginThrottle(5, 50, 900, clock, max_keys=100)
    for i in range(1000):
        clock.now += 0.001
        throttle.begin(f"user{i}", f"10.0.{i // 250}.{i % 250}")
    assert len(throttle._failures) <= 100


def test_pool_refuses_at_once_beyond_its_queue():
    release = threading.Event()
    pool = PasswordPool(workers=1, queue=1)

    async def scenario():
        first = asyncio.ensure_future(pool.run(release.wait, 30))
        second = asyncio.ensure_future(pool.run(release.wait, 30))
        await asyncio.sleep(0)
        with pytest.raises(Busy) as busy:
            await pool.run(release.wait, 30)
        assert busy.value.retry_after == 1
        release.set()
        assert await first and await second
        assert await pool.run(lambda: "free again") == "free again"

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        pool.shutdown()


def test_pool_threads_run_at_a_lower_priority():
    import os

    pool = PasswordPool(workers=1, queue=0, nice=7)
    try:
        niceness = asyncio.run(pool.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    finally:
        pool.shutdown()
    assert niceness == max(7, os.getpriority(os.PRIO_PROCESS, 0))


@pytest.fixture
def logins(storage):
    add_user(storage, "alice", "correct horse", rounds=4)
    settings = Settings(bcrypt_rounds=4, login_failures_per_user=3, login_failures_per_address=10)
    logins = Logins(settings, storage)
    yield logins
    logins.pool.shutdown()


def attempt(logins: Logins, username: str, password: str, address: str = "192.0.2.1"):
    return asyncio.run(logins.login(username, password, address, SECRET))


def test_login_flow_logs_one_line_per_attempt_without_the_password(logins, caplog):
    caplog.set_level(logging.INFO, logger="recommender.auth")
    for _ in range(3):
        with pytest.raises(AuthError):
            attempt(logins, "alice", "wrong password 1")
    with pytest.raises(TooManyRequests):
        attempt(logins, "alice", "correct horse")  # throttled even with the right password
    token = attempt(logins, "alice", "correct horse", address="192.0.2.2")
    assert verify_token(token, SECRET).username == "alice"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "recommender.auth"]
    assert [line["outcome"] for line in lines] == ["failure"] * 3 + ["throttled", "success"]
    assert lines[0] == {"event": "login", "username": "alice", "client": "192.0.2.1", "outcome": "failure"}
    assert not any(secret in caplog.text for secret in ("wrong password", "correct horse", token))


def test_unknown_users_are_throttled_alike(logins):
    for name in ("alice", "nobody"):
        for _ in range(3):
            with pytest.raises(AuthError) as refused:
                attempt(logins, name, "wrong password 1")
            assert refused.value.message == "incorrect username or password"
        with pytest.raises(TooManyRequests) as throttled:
            attempt(logins, name, "wrong password 1")
        assert throttled.value.message.startswith("too many failed logins")


def test_log_line_escapes_what_the_client_sent(logins, caplog):
    caplog.set_level(logging.INFO, logger="recommender.auth")
    with pytest.raises(AuthError):
        attempt(logins, 'eve\n{"outcome": "success"}' + "x" * 100, "wrong password 1")
    (record,) = [r for r in caplog.records if r.name == "recommender.auth"]
    line = record.getMessage()
    assert "\n" not in line and json.loads(line)["outcome"] == "failure"
    assert len(json.loads(line)["username"]) == 64


def run_in_order(
    workers: int, queue: int, arrivals: list[tuple[str, int]], then: dict[str, int] | None = None
) -> tuple[list[str], list[str]]:
    """Hold the one thread of a pool, queue one check per (source, failed logins of the source) of arrivals, let
    go (with the failures of `then` counted meanwhile): the sources in the order their checks ran, and those turned
    away as busy."""
    release, ran, busy = threading.Event(), [], []
    weights = dict(arrivals)
    pool = PasswordPool(workers, queue, weight=lambda source: weights.get(source, 0))

    async def scenario():
        holding = asyncio.ensure_future(pool.run(release.wait, 30, source="holder"))
        await asyncio.sleep(0.05)  # the holder's check is running
        checks = [asyncio.ensure_future(pool.run(ran.append, source, source=source)) for source, _ in arrivals]
        await asyncio.sleep(0)
        weights.update(then or {})
        release.set()
        await holding
        for (source, _), check in zip(arrivals, checks, strict=True):
            try:
                await check
            except Busy:
                busy.append(source)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        pool.shutdown()
    return ran, busy


def test_a_check_from_a_new_source_is_behind_at_most_one_of_each_other_source():
    # 20 flooding sources with 3 checks each, then a legitimate client, all with as few failures: it still runs
    # within the first round, before any flooder's second check.
    flood = [(f"10.0.0.{i}", 1) for _ in range(3) for i in range(20)]
    ran, busy = run_in_order(1, 100, [*flood, ("192.0.2.1", 1)])
    assert busy == [] and len(ran) == 61
    assert ran.index("192.0.2.1") <= 20
    assert sorted(ran[:20]) == sorted({s for s, _ in flood}) and len(set(ran[:21])) == 21


def test_a_source_with_fewer_failures_goes_first_within_its_round():
    flood = [(f"10.0.0.{i}", 40) for _ in range(3) for i in range(20)]
    ran, _ = run_in_order(1, 100, [*flood, ("192.0.2.1", 1)])
    assert ran[0] == "192.0.2.1"


def test_a_full_queue_turns_away_the_flooders_check_not_the_newcomers():
    flood = [(f"10.0.0.{i % 4}", 30) for i in range(8)]  # 4 sources fill the 8 places, 2 checks each
    ran, busy = run_in_order(1, 8, [*flood, ("192.0.2.1", 1), ("10.0.0.9", 30)])
    assert ran[0] == "192.0.2.1"
    # The legitimate check took the place of a flooder's second-round check; the new flooder's, in round one with
    # the most failures and the newest, outranked a second-round check too; nobody waits past 8.
    assert len(ran) == 8 and len(busy) == 2
    assert all(source.startswith("10.0.0.") for source in busy)


def test_a_check_turned_away_as_busy_counts_as_a_failure_of_its_source(storage):
    settings = Settings(bcrypt_rounds=4, login_failures_per_address=3, login_workers=1, login_queue=0)
    logins = Logins(settings, storage)
    release = threading.Event()

    async def scenario():
        holding = asyncio.ensure_future(logins.pool.run(release.wait, 30, source="other"))
        await asyncio.sleep(0.05)
        for _ in range(3):
            with pytest.raises(Busy):
                await logins.login("alice", "a wrong password", "203.0.113.9", SECRET)
        release.set()
        await holding
        # The pool is free now, but this source is throttled: answered at once, nothing hashed.
        with pytest.raises(TooManyRequests):
            await logins.login("alice", "a wrong password", "203.0.113.9", SECRET)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        logins.pool.shutdown()


def test_a_password_with_a_control_character_is_refused_before_anything_is_counted(logins):
    for _ in range(5):
        with pytest.raises(InvalidInput, match="control character"):
            attempt(logins, "alice", "correct horse\n")
    assert verify_token(attempt(logins, "alice", "correct horse"), SECRET).username == "alice"


def test_failures_counted_after_a_check_arrived_still_move_it_back():
    # The flood's first checks arrive before their sources have failed much; by the time a thread is free, the
    # busy answers to their sources' later requests have counted.
    flood = [(f"10.0.0.{i}", 1) for i in range(20)]
    ran, _ = run_in_order(1, 100, [*flood, ("192.0.2.1", 1)], then={s: 25 for s, _ in flood})
    assert ran[0] == "192.0.2.1"


def test_a_check_whose_client_left_frees_its_place_and_is_never_run():
    release, ran = threading.Event(), []
    pool = PasswordPool(workers=1, queue=1)

    async def scenario():
        holding = asyncio.ensure_future(pool.run(release.wait, 30, source="a"))
        await asyncio.sleep(0.05)
        left = asyncio.ensure_future(pool.run(ran.append, "left", source="b"))
        await asyncio.sleep(0)
        left.cancel()  # the client closed its connection
        await asyncio.sleep(0)
        stays = asyncio.ensure_future(pool.run(ran.append, "stays", source="c"))  # the place is free again
        await asyncio.sleep(0)
        release.set()
        await holding
        await stays
        assert left.cancelled()

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        pool.shutdown()
    assert ran == ["stays"]


def test_a_client_that_logged_in_a_moment_ago_is_not_sent_behind_a_floods_round():
    # Its first check used its turn of the current round; the flooders, which failed far more, still wait behind
    # its second one rather than the other way round.
    flood = [(f"10.0.0.{i}", 30) for i in range(20)]
    ran, _ = run_in_order(1, 100, [("192.0.2.1", 2), *flood, ("192.0.2.1", 2)])
    assert ran[:2] == ["192.0.2.1", "192.0.2.1"]
