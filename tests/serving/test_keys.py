"""API keys over both storages: shown once and stored as a hash, scopes, origins, the cache's poll, the token
bucket, last used, and conditional changes that fail whole."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from recommender.core.errors import (
    AlreadyExists,
    AuthError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    StorageError,
    TooManyRequests,
)
from recommender.core.storage import LocalStorage
from recommender.serving.keys import (
    Buckets,
    KeyCache,
    add_key,
    hash_key,
    list_keys,
    normalize_origin,
    revoke_key,
)

SHOP = "https://shop.example.com"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def stamps_written_before_the_next_test():
    """A check writes its key's last-used stamp from a short thread: wait for the ones a test started, or one could
    land in the next test's storage (moto's hook serves whichever S3 mock runs: same bucket, same key names)."""
    yield
    for thread in threading.enumerate():
        if thread.name.endswith("(_write_used)"):
            thread.join(5)


def test_a_key_is_shown_once_and_only_its_hash_is_stored(storage):
    record, key = add_key(storage, "shop-web", "recommend,events", f"{SHOP}/, HTTPS://Shop.Example.com:443", 20)
    assert key.startswith("rk_pub_") and len(key) >= 7 + 43
    assert record.origins == (SHOP,) and record.scopes == {"recommend", "events"} and record.kind == "browser"
    stored = b"".join(storage.read(k) for k in storage.list("keys/"))
    assert key.encode() not in stored and key[11:].encode() not in stored
    assert hash_key(key).encode() in stored
    server, secret = add_key(storage, "backend", ["recommend"], "", 5)
    assert secret.startswith("rk_sec_") and server.kind == "server" and secret != key
    assert [(i.key.name, i.key.prefix, i.last_used) for i in list_keys(storage)] == [
        ("backend", secret[:11], None),
        ("shop-web", key[:11], None),
    ]


def test_names_are_unique_in_any_case_and_of_concurrent_adds_one_wins(storage):
    add_key(storage, "shop", "recommend")
    with pytest.raises(AlreadyExists, match="already exists"):
        add_key(storage, "SHOP", "events")
    won, lost = [], []

    def add() -> None:
        try:
            won.append(add_key(storage, "race", "recommend")[1])
        except AlreadyExists:
            lost.append(1)

    threads = [threading.Thread(target=add) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 5
    cache = KeyCache(storage, 60)
    cache.refresh()
    assert cache.check(won[0], "recommend", None, "/items").name == "race"


@pytest.mark.parametrize(
    ("scopes", "origins", "rate", "problem"),
    [
        ("", "", 1, "no scope given"),
        ("recommend,admin", "", 1, "unknown scope 'admin'"),
        ("recommend", "*", 1, "is not an origin"),
        ("recommend", "https://shop.example.com/path", 1, "is not an origin"),
        ("recommend", "shop.example.com", 1, "is not an origin"),
        ("recommend", "https://*.example.com", 1, "is not an origin"),
        ("recommend", "https://shop.example.com:70000", 1, "port outside"),
        ("recommend", "", 0, "above 0"),
        ("recommend", "", float("nan"), "above 0"),
    ],
)
def test_bad_scopes_origins_and_rates_are_refused_and_nothing_is_stored(tmp_path, scopes, origins, rate, problem):
    storage = LocalStorage(tmp_path / "store")  # checked before any storage call: one backend is enough
    with pytest.raises(InvalidInput, match=problem):
        add_key(storage, "shop", scopes, origins, rate)
    assert storage.list("keys/") == []


def test_origins_are_compared_as_browsers_send_them():
    assert normalize_origin("HTTP://LOCALHOST:8090/") == "http://localhost:8090"
    assert normalize_origin("http://shop.example.com:80") == "http://shop.example.com"
    assert normalize_origin("https://[::1]:8443") == "https://[::1]:8443"


def test_revoking_a_key_changed_meanwhile_fails_and_changes_nothing(storage):
    add_key(storage, "shop", "recommend")
    original = storage.read_tagged
    replaced: list[str] = []

    def read_then_another_command_replaces_it(key: str):
        answer = original(key)
        # Another operator revokes the key and makes a new one of that name between this read and the delete.
        storage.delete("keys/shop.json")
        replaced.append(add_key(storage, "shop", "events")[1])
        return answer

    storage.read_tagged = read_then_another_command_replaces_it
    with pytest.raises(Conflict, match="changed by another command meanwhile; nothing was revoked"):
        revoke_key(storage, "shop")
    storage.read_tagged = original
    (info,) = list_keys(storage)
    assert info.key.scopes == {"events"} and info.key.sha256 == hash_key(replaced[0])
    revoke_key(storage, "Shop")
    assert list_keys(storage) == []
    with pytest.raises(NotFound, match="no API key named 'shop'"):
        revoke_key(storage, "shop")


def test_the_cache_checks_scopes_and_origins(storage):
    _, browser = add_key(storage, "web", "recommend", SHOP)
    _, server = add_key(storage, "backend", "events")
    cache = KeyCache(storage, 60)
    cache.refresh()
    assert cache.check(browser, "recommend", SHOP, "/send_data").name == "web"
    assert cache.origins("recommend") == {SHOP} and cache.origins("events") == frozenset()
    refusals = [
        (browser, "events", SHOP, Forbidden, "has no 'events' scope, which /events needs"),
        (browser, "recommend", "https://evil.example.com", Forbidden, "origin https://evil.example.com is not listed"),
        (browser, "recommend", None, Forbidden, "carries no Origin header"),
        (server, "events", SHOP, Forbidden, "is a server key"),
        (server, "recommend", None, Forbidden, "has no 'recommend' scope"),
        ("rk_pub_guessed", "recommend", SHOP, AuthError, "unknown or revoked API key"),
    ]
    for key, scope, origin, error, message in refusals:
        with pytest.raises(error, match=message):
            cache.check(key, scope, origin, "/events" if scope == "events" else "/send_data")
    assert cache.check(server, "events", None, "/events").scopes == {"events"}


def test_new_and_revoked_keys_are_seen_after_the_poll_and_guesses_never_read_the_storage(storage):
    clock = Clock()
    _, old = add_key(storage, "old", "recommend")
    cache = KeyCache(storage, 2.0, clock=clock)
    cache.refresh()
    revoke_key(storage, "old")
    _, new = add_key(storage, "new", "recommend")
    clock.now += 1.9
    assert not cache.due()
    cache.check(old, "recommend", None, "/items")  # within the poll: the key read last still holds
    reads = []
    original = storage.read
    storage.read = lambda key: (reads.append(key), original(key))[1]
    for _ in range(50):
        with pytest.raises(AuthError):
            cache.check(f"rk_sec_guess{_}", "recommend", None, "/items")
    assert reads == []
    clock.now += 0.1
    assert cache.due()
    cache.refresh()
    with pytest.raises(AuthError, match="unknown or revoked"):
        cache.check(old, "recommend", None, "/items")
    assert cache.check(new, "recommend", None, "/items").name == "new"


def test_a_failing_storage_keeps_the_keys_read_before(storage, monkeypatch):
    clock = Clock()
    _, key = add_key(storage, "shop", "recommend")
    cache = KeyCache(storage, 1.0, clock=clock)
    cache.refresh()

    def unreachable(_prefix):
        raise StorageError("storage unreachable")

    monkeypatch.setattr(storage, "list", unreachable)
    clock.now += 5
    cache.refresh()  # logged, not raised
    assert cache.check(key, "recommend", None, "/items").name == "shop"
    with pytest.raises(StorageError):
        KeyCache(storage, 1.0).refresh()  # nothing read ever: the caller answers 503


def test_the_token_bucket_allows_the_rate_with_a_burst_of_one_second():
    clock = Clock()
    buckets = Buckets(clock)
    assert [buckets.take("a", 3) for _ in range(3)] == [None, None, None]
    assert buckets.take("a", 3) == 1
    assert buckets.take("b", 3) is None  # each key its own bucket
    clock.now += 0.34
    assert buckets.take("a", 3) is None and buckets.take("a", 3) == 1
    assert [buckets.take("slow", 0.1) for _ in range(2)] == [None, 10]  # a second's worth: at least one request


def test_over_the_rate_is_429_with_retry_after(storage):
    clock = Clock()
    _, key = add_key(storage, "shop", "recommend", rate=2)
    cache = KeyCache(storage, 60, clock=clock)
    cache.refresh()
    cache.check(key, "recommend", None, "/items")
    cache.check(key, "recommend", None, "/items")
    with pytest.raises(TooManyRequests, match="over its rate of 2 requests/s") as refused:
        cache.check(key, "recommend", None, "/items")
    assert refused.value.retry_after == 1 and refused.value.status_code == 429


def test_last_used_is_written_off_the_request_path_at_most_once_a_minute(storage):
    clock = Clock()
    _, key = add_key(storage, "shop", "recommend")
    stamps = iter([datetime(2026, 12, 2, 10, 0, tzinfo=UTC), datetime(2026, 12, 2, 10, 2, tzinfo=UTC)])
    cache = KeyCache(storage, 60, clock=clock, wall=lambda: next(stamps))
    cache.refresh()
    writes = []
    original = storage.write
    storage.write = lambda k, data: (writes.append(k), original(k, data))[1]
    for _ in range(5):
        cache.check(key, "recommend", None, "/items")
    _wait_for(lambda: list_keys(storage)[0].last_used == "2026-12-02T10:00:00+00:00")
    assert writes == ["keys/used/shop.json"]
    clock.now += 60
    cache.check(key, "recommend", None, "/items")
    _wait_for(lambda: list_keys(storage)[0].last_used == "2026-12-02T10:02:00+00:00")
    revoke_key(storage, "shop")
    assert storage.list("keys/") == []


def _wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not written in time"
        time.sleep(0.01)


def test_a_damaged_record_refuses_its_own_key_only(storage):
    _, good = add_key(storage, "good", "recommend")
    _, bad = add_key(storage, "bad", "recommend")
    storage.write("keys/bad.json", b"{not json")
    cache = KeyCache(storage, 60)
    cache.refresh()
    assert cache.check(f" {good}\n", "recommend", None, "/items").name == "good"  # pasted with spaces: the same key
    with pytest.raises(AuthError):
        cache.check(bad, "recommend", None, "/items")
