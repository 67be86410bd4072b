"""The pointer functions serve every kind (models, feed, rules) with the same code, each under its own prefix."""

from datetime import UTC, datetime, timedelta

import pytest

from recommender.core import registry
from recommender.core.errors import ModelUnavailable, VersionUnavailable


def clock(start: datetime):
    """A clock that moves one second per call, so version ids sort in publishing order."""
    state = {"t": start}

    def now() -> datetime:
        state["t"] += timedelta(seconds=1)
        return state["t"]

    return now


def test_feed_and_rules_versions_are_kept_apart_from_models(storage):
    now = clock(datetime(2024, 5, 1, tzinfo=UTC))
    feed = [
        registry.publish_files(storage, {"feed.json": f'{{"n": {i}}}'.encode()}, {"rows": i}, registry.FEED, now)[
            "version"
        ]
        for i in range(3)
    ]
    rules = registry.publish_files(storage, {"rules.json": b"{}"}, {}, registry.RULES, now)["version"]
    assert registry.list_versions(storage, registry.FEED) == feed
    assert registry.list_versions(storage, registry.RULES) == [rules]
    assert registry.list_versions(storage) == [] and registry.active(storage) is None
    assert storage.list("feed/versions/" + feed[0] + "/") == [
        f"feed/versions/{feed[0]}/feed.json",
        f"feed/versions/{feed[0]}/manifest.json",
    ]
    for version in feed:
        registry.activate(storage, version, now, kind=registry.FEED)
    assert registry.active(storage, registry.FEED) == registry.Pointer(feed[2], (feed[1], feed[0]))
    assert registry.read_manifest(storage, feed[1], registry.FEED)["rows"] == 1
    assert registry.read_verified(storage, feed[2], "feed.json", registry.FEED) == b'{"n": 2}'
    assert registry.rollback(storage, registry.FEED) == feed[1]
    assert registry.active_version(storage, registry.FEED) == feed[1]
    with pytest.raises(VersionUnavailable, match="no merchandising rules"):
        registry.active_version(storage, registry.RULES)
    with pytest.raises(ModelUnavailable, match="no trained model"):
        registry.active_version(storage)


def test_damaged_feed_is_refused_and_rollback_skips_it(storage):
    now = clock(datetime(2024, 5, 1, tzinfo=UTC))
    first, second, third = (
        registry.publish_files(storage, {"feed.json": bytes([i])}, {}, registry.FEED, now)["version"] for i in range(3)
    )
    for version in (first, second, third):
        registry.activate(storage, version, now, kind=registry.FEED)
    storage.write(registry.artifact_key(second, "feed.json", registry.FEED), b"tampered")
    with pytest.raises(VersionUnavailable, match="feed.json is damaged"):
        registry.read_verified(storage, second, "feed.json", registry.FEED)
    assert registry.rollback(storage, registry.FEED) == first
    with pytest.raises(VersionUnavailable, match="no earlier feed version"):
        registry.rollback(storage, registry.FEED)


def test_prune_per_kind(storage):
    now = clock(datetime(2024, 5, 1, tzinfo=UTC))
    versions = [
        registry.publish_files(storage, {"rules.json": bytes([i])}, {}, registry.RULES, now)["version"]
        for i in range(5)
    ]
    registry.activate(storage, versions[0], now, kind=registry.RULES)
    deleted = registry.prune(storage, 2, now=now, kind=registry.RULES)
    assert deleted == versions[1:3]
    assert registry.list_versions(storage, registry.RULES) == [versions[0], *versions[3:]]


def test_stage_and_promote_another_kind(storage):
    now = clock(datetime(2024, 5, 1, tzinfo=UTC))
    version = registry.publish_files(storage, {"feed.json": b"x"}, {}, registry.FEED, now)["version"]
    with pytest.raises(VersionUnavailable, match="no feed is staged"):
        registry.promote_staged(storage, registry.FEED)
    registry.stage(storage, version, now, kind=registry.FEED)
    assert registry.staged(storage, registry.FEED).version == version
    assert registry.promote_staged(storage, registry.FEED) == version
    assert (
        registry.active_version(storage, registry.FEED) == version and registry.staged(storage, registry.FEED) is None
    )
