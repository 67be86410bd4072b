"""The pointer functions serve every kind (models, feed, rules) with the same code, each under its own prefix."""

from datetime import UTC, datetime, timedelta

import pytest

from recommender.core import registry
from recommender.core.errors import Conflict, InvalidInput, ModelUnavailable, PointerDamaged, VersionUnavailable


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
    with pytest.raises(Conflict, match="no earlier feed version"):
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


# Valid JSON of the wrong shape, and artifact names that would leave the version's folder: damaged, like the rest.
WRONG_MANIFESTS = [
    b"[]",
    b"5",
    b'"str"',
    b"true",
    b"null",
    b'{"artifacts": {"../../users/alice.json": "00"}}',
    b'{"artifacts": {"sub/index.ann": "00"}}',
    b'{"artifacts": ["index.ann"]}',
    b'{"artifacts": {}, "evaluation": [0.3]}',
]


@pytest.mark.parametrize("content", WRONG_MANIFESTS)
def test_a_manifest_of_the_wrong_shape_is_a_damaged_version(storage, content):
    version = "20240501T000000000Z-deadbeef0000"
    storage.write(registry.artifact_key(version, registry.MANIFEST), content)
    for read in (registry.read_manifest, registry.verify):
        with pytest.raises(ModelUnavailable, match=f"model version {version} has a damaged manifest"):
            read(storage, version)
    assert registry.version_problem(storage, version).startswith("damaged: unreadable manifest (")


def test_a_pointer_naming_a_path_is_damaged(storage):
    storage.write(registry.MODELS.active, b'{"version": "../../users/alice"}')
    with pytest.raises(PointerDamaged, match="is damaged"):
        registry.active(storage)
    with pytest.raises(ModelUnavailable, match="is not a version name"):
        registry.read_manifest(storage, "../users")


def _three_models(storage) -> list[str]:
    now = clock(datetime(2024, 5, 1, tzinfo=UTC))
    versions = [
        registry.publish_files(storage, {"index.ann": bytes([i])}, {}, registry.MODELS, now)["version"]
        for i in range(3)
    ]
    for version in versions:
        registry.activate(storage, version, now)
    return versions


@pytest.mark.parametrize("damage", ["artifact", "manifest"])
def test_rollback_says_which_earlier_version_is_damaged(storage, damage):
    first, second, third = _three_models(storage)
    if damage == "artifact":
        storage.write(registry.artifact_key(second, "index.ann"), b"tampered")
        why = f"model version {second}: artifact index.ann is damaged (checksum mismatch)"
    else:
        storage.write(registry.artifact_key(second, registry.MANIFEST), b"[]")
        why = f"model version {second} has a damaged manifest (a JSON list, not an object)"
    notes = []
    assert registry.rollback(storage, notify=notes.append) == first  # the one before it is whole
    assert notes == [f"rolled back past what cannot be re-activated: {why}"]
    registry.write_pointer(storage, registry.ACTIVE, registry.Pointer(third, (second, first)), "activated_at")
    # (its manifest: S3's local copy of its artifact, made by the rollback above, is whole)
    storage.write(registry.artifact_key(first, registry.MANIFEST), b"5")
    with pytest.raises(Conflict) as refused:
        registry.rollback(storage)
    assert refused.value.message == (
        f"cannot roll back, nothing changed: {why}; model version {first} has a damaged manifest (a JSON int, "
        "not an object)"
    )
    assert registry.active_version(storage) == third


def test_find_version_by_a_unique_beginning(storage):
    first, second, _third = _three_models(storage)
    assert registry.find_version(storage, first) == first and registry.find_version(storage, second[:17]) == second
    with pytest.raises(InvalidInput, match="begins 3 model versions"):
        registry.find_version(storage, "2024")
    with pytest.raises(ModelUnavailable, match="no model version '2099' in .*`make versions` lists them"):
        registry.find_version(storage, "2099")
