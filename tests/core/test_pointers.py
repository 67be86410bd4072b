"""Pointer moves under concurrency and damage, on disk and on S3: conditional writes, another command slipping in
between a read and a write, damaged pointers, marked versions, and re-downloaded cache copies."""

import threading
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from recommender.core import registry
from recommender.core.errors import Conflict, PointerDamaged, VersionUnavailable
from recommender.core.storage import LocalStorage, S3Storage
from recommender.serving.model import ModelHolder, load_model
from recommender.training.pipeline import train
from tests.conftest import BUCKET


def clock():
    state = {"t": datetime(2024, 5, 1, tzinfo=UTC)}

    def now() -> datetime:
        state["t"] += timedelta(seconds=1)
        return state["t"]

    return now


def publish(storage, n: int, kind=registry.MODELS) -> list[str]:
    """n small complete versions (in-memory artifacts), oldest first."""
    now = clock()
    return [registry.publish_files(storage, {"blob.bin": bytes([i]) * 10}, {}, kind, now)["version"] for i in range(n)]


class Meanwhile:
    """The storage as one command sees it while another command acts once, just before this one's first conditional
    write (or delete): the other command slips in between this one's read and its write."""

    def __init__(self, inner, other) -> None:
        self.inner, self.other = inner, other

    def _first(self) -> None:
        if self.other is not None:
            other, self.other = self.other, None
            other()

    def write_if(self, key, data, tag):
        self._first()
        return self.inner.write_if(key, data, tag)

    def delete_if(self, key, tag):
        self._first()
        return self.inner.delete_if(key, tag)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def notes():
    said: list[str] = []
    return said, said.append


def test_conditional_writes_and_deletes(storage):
    assert storage.write_if("models/ACTIVE", b"one", None) is True
    assert storage.write_if("models/ACTIVE", b"two", None) is False  # exists: a create loses
    data, tag = storage.read_tagged("models/ACTIVE")
    assert data == b"one"
    assert storage.write_if("models/ACTIVE", b"two", tag) is True
    assert storage.write_if("models/ACTIVE", b"three", tag) is False  # changed since tag was read
    assert storage.delete_if("models/ACTIVE", tag) is False
    assert storage.read("models/ACTIVE") == b"two"
    assert storage.delete_if("models/ACTIVE", storage.read_tagged("models/ACTIVE")[1]) is True
    assert storage.write_if("models/ACTIVE", b"x", tag) is False  # gone: an If-Match write loses
    assert storage.list("models/") == []  # lock files stay hidden


@pytest.fixture(params=["local", "s3"])
def shared_storage(request, tmp_path):
    """A storage that threads may share: a folder, or S3 over real HTTP (moto's in-process mock is not thread-safe:
    concurrent calls through it fail with "I/O operation on closed file")."""
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    client = boto3.client(
        "s3",
        endpoint_url=request.getfixturevalue("moto_server"),
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = f"threads-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3Storage(client, bucket, "shop", cache_dir=str(tmp_path / "cache"))


def test_many_threads_moving_one_pointer_lose_nothing(shared_storage):
    versions = publish(shared_storage, 12)
    failures: list[Exception] = []

    def activate(version: str) -> None:
        try:
            registry.activate(shared_storage, version, notify=lambda _m: None)
        except Exception as err:  # noqa: BLE001 - reported below
            failures.append(err)

    threads = [threading.Thread(target=activate, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    pointer = registry.active(shared_storage)
    assert sorted([pointer.version, *pointer.previous]) == versions  # every activation is in the history


def test_activation_racing_another_keeps_both_in_the_history(storage):
    a, b, c = publish(storage, 3)
    registry.activate(storage, a)
    said, notify = notes()
    racing = Meanwhile(storage, lambda: registry.activate(storage, c))
    registry.activate(racing, b, notify=notify)
    assert registry.active(storage) == registry.Pointer(b, (c, a))
    assert len(said) == 1 and c in said[0] and "meanwhile" in said[0]
    assert registry.rollback(storage) == c and registry.rollback(storage) == a


def test_rollback_racing_a_promotion_gives_up_and_says_so(storage):
    a, b, staged = publish(storage, 3)
    registry.activate(storage, a)
    registry.activate(storage, b)
    registry.stage(storage, staged)
    racing = Meanwhile(storage, lambda: registry.promote_staged(storage))
    with pytest.raises(Conflict, match=f"made {staged} active\\): nothing was rolled back"):
        registry.rollback(racing)
    assert registry.active(storage) == registry.Pointer(staged, (b, a))
    assert registry.staged(storage) is None


def test_promotion_racing_a_rollback_lands_on_top_of_it(storage):
    a, b, staged = publish(storage, 3)
    registry.activate(storage, a)
    registry.activate(storage, b)
    registry.stage(storage, staged)
    said, notify = notes()
    racing = Meanwhile(storage, lambda: registry.rollback(storage))
    assert registry.promote_staged(racing, notify=notify) == staged
    assert registry.active(storage) == registry.Pointer(staged, (a,))  # b was rolled back away from
    assert any(a in line for line in said)


def test_a_version_staged_during_a_promotion_stays_staged(storage):
    first, second = publish(storage, 2)
    registry.stage(storage, first)
    said, notify = notes()
    racing = Meanwhile(storage, lambda: None)
    racing.delete_if = lambda key, tag: (registry.stage(storage, second), storage.delete_if(key, tag))[1]
    assert registry.promote_staged(racing, notify=notify) == first
    assert registry.active_version(storage) == first and registry.staged(storage).version == second
    assert said == [f"model version {second} was staged meanwhile and stays staged"]


def test_feed_and_rules_share_the_same_guarantees(storage):
    for kind in (registry.FEED, registry.RULES):
        a, b, c = publish(storage, 3, kind)
        registry.activate(storage, a, kind=kind)
        registry.activate(
            Meanwhile(storage, lambda: registry.activate(storage, c, kind=kind)), b, kind=kind, notify=lambda _m: None
        )
        assert registry.active(storage, kind) == registry.Pointer(b, (c, a))


@pytest.mark.parametrize("content", [b"", b'{"vers', b"[]", b'{"version": 3}', b"\x00\xff"])
def test_damaged_pointer_is_one_message_and_activation_repairs_it(storage, content):
    a, b = publish(storage, 2)
    registry.activate(storage, a)
    storage.write(registry.ACTIVE, content)
    for command in (registry.active_version, registry.rollback):
        with pytest.raises(
            PointerDamaged,
            match=r"models/ACTIVE in .* is damaged \((empty|not a pointer)\): run "
            r"`make train",
        ):
            command(storage)
    assert registry.prune(storage, keep=5) == []  # a damaged pointer protects nothing, and stops nothing
    said, notify = notes()
    registry.activate(storage, b, notify=notify)
    assert registry.active(storage) == registry.Pointer(b, ())
    assert "was damaged and is replaced" in said[0]


def test_watcher_survives_a_damaged_pointer_and_picks_up_the_next_model(trained_storage, tiny_csv):
    holder = ModelHolder(trained_storage, poll_seconds=0.02)
    first = holder.refresh().version
    stop = threading.Event()
    thread = holder.watch(stop)
    try:
        trained_storage.write(registry.ACTIVE, b"")
        assert _until(lambda: holder.error and "damaged" in holder.error)
        assert thread.is_alive() and holder.current().version == first  # still serving what it has
        second = train(tiny_csv, trained_storage, progress=lambda _m: None).version  # activation repairs the pointer
        assert _until(lambda: holder.model.version == second)
        assert holder.error is None
    finally:
        stop.set()
        thread.join(timeout=30)


def _until(condition, timeout: float = 30.0) -> bool:
    stop = threading.Event()
    deadline = datetime.now() + timedelta(seconds=timeout)
    while not condition():
        if datetime.now() > deadline:
            return False
        stop.wait(0.01)
    return True


def test_versions_are_marked_incomplete_or_damaged(storage):
    whole, damaged, unfinished = publish(storage, 3)
    storage.write(registry.artifact_key(damaged, "blob.bin"), b"tampered")
    storage.delete(registry.artifact_key(unfinished, registry.MANIFEST))
    assert registry.version_problem(storage, whole) is None
    assert registry.version_problem(storage, damaged) == "damaged: blob.bin fails its checksum"
    assert registry.version_problem(storage, unfinished).startswith("incomplete, no manifest")
    storage.delete(registry.artifact_key(whole, "blob.bin"))
    assert registry.version_problem(storage, whole) == "damaged: blob.bin is missing"


def test_a_damaged_cache_copy_is_downloaded_again(s3, tiny_csv, tmp_path):
    storage = S3Storage(s3, BUCKET, "shop", cache_dir=str(tmp_path / "cache"))
    version = train(tiny_csv, storage, progress=lambda _m: None).version
    load_model(storage, version)
    cached = storage.local_copy(registry.artifact_key(version, "index.ann"))
    cached.write_bytes(b"damaged on the local disk")
    assert load_model(storage, version).version == version  # fetched again, not a 503 forever
    assert registry.sha256_file(cached) == registry.read_manifest(storage, version)["artifacts"]["index.ann"]
    # Damaged in the bucket itself (and no good copy cached): refused, naming the artifact.
    s3.put_object(Bucket=BUCKET, Key=f"shop/{registry.artifact_key(version, 'index.ann')}", Body=b"bad")
    storage.drop_local_copies(keep_prefix="none/")
    with pytest.raises(VersionUnavailable, match="index.ann is damaged"):
        load_model(storage, version)


def test_a_damaged_feed_pointer_says_how_to_write_a_new_one(storage):
    storage.write(registry.FEED.active, b"{")
    with pytest.raises(PointerDamaged, match=r"feed/ACTIVE in .* is damaged \(not a pointer\): run `make feed"):
        registry.active(storage, registry.FEED)
