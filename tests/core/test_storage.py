"""The storage contract, run against the local folder and S3 (moto) alike."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from recommender.core.errors import ConfigError, NotFound
from recommender.core.settings import Settings
from recommender.core.storage import LocalStorage, S3Storage, check_key, open_storage


def test_write_then_read(storage):
    storage.write("a/b.txt", b"hello")
    assert storage.read("a/b.txt") == b"hello"


def test_write_replaces(storage):
    storage.write("k", b"one")
    storage.write("k", b"two")
    assert storage.read("k") == b"two"


def test_read_missing_is_not_found(storage):
    with pytest.raises(NotFound):
        storage.read("nope/missing")


def test_create_only_if_absent(storage):
    assert storage.create("users/x.json", b"first") is True
    assert storage.create("users/x.json", b"second") is False
    assert storage.read("users/x.json") == b"first"


def test_concurrent_create_has_one_winner(storage):
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: storage.create("race", str(i).encode()), range(10)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert storage.read("race") == str(winner).encode()


def test_delete(storage):
    storage.write("d", b"x")
    assert storage.delete("d") is True
    assert storage.delete("d") is False
    with pytest.raises(NotFound):
        storage.read("d")


def test_list_by_prefix(storage):
    for key in ("models/v1/a", "models/v1/b", "models/v2/a", "users/u.json"):
        storage.write(key, b"x")
    assert storage.list("models/") == ["models/v1/a", "models/v1/b", "models/v2/a"]
    assert storage.list("models/v1/") == ["models/v1/a", "models/v1/b"]
    assert storage.list("nothing/") == []


def test_local_copy_has_the_bytes(storage):
    storage.write("models/v/index.ann", b"\x00\x01binary")
    assert storage.local_copy("models/v/index.ann").read_bytes() == b"\x00\x01binary"
    with pytest.raises(NotFound):
        storage.local_copy("models/v/absent")


@pytest.mark.parametrize("key", ["", "/abs", "../escape", "a/../b", "dir/"])
def test_bad_keys_refused(storage, key):
    with pytest.raises(ValueError):
        storage.write(key, b"x")


def test_local_files_are_private(tmp_path):
    store = LocalStorage(tmp_path)
    store.write("secrets/s", b"x")
    store.create("users/u.json", b"x")
    assert (tmp_path / "secrets/s").stat().st_mode & 0o077 == 0
    assert (tmp_path / "users/u.json").stat().st_mode & 0o077 == 0
    assert not [p for p in tmp_path.rglob(".*")], "no temp files left behind"


def test_open_storage_picks_backend(tmp_path, s3):
    assert isinstance(open_storage(Settings(storage_url=str(tmp_path))), LocalStorage)
    s3_store = open_storage(Settings(storage_url="s3://recommender-test/pre"), s3_client=s3)
    assert isinstance(s3_store, S3Storage) and s3_store.url == "s3://recommender-test/pre/"
    with pytest.raises(ConfigError):
        open_storage(Settings(storage_url="s3:///nobucket"))
    with pytest.raises(ConfigError):
        open_storage(Settings(storage_url="gs://bucket/x"))


def test_s3_keys_live_under_the_prefix(s3):
    store = S3Storage(s3, "recommender-test", "team/models")
    store.write("users/a.json", b"{}")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="recommender-test")["Contents"]]
    assert keys == ["team/models/users/a.json"]


def test_check_key_accepts_normal_keys():
    assert check_key("models/versions/v1/index.ann") == "models/versions/v1/index.ann"


def test_s3_drop_local_copies_keeps_the_current_version(s3, tmp_path):
    store = S3Storage(s3, "recommender-test", "p", cache_dir=str(tmp_path))
    for version in ("v1", "v2"):
        store.write(f"models/versions/{version}/index.ann", version.encode())
        store.local_copy(f"models/versions/{version}/index.ann")
    store.drop_local_copies(keep_prefix="models/versions/v2/")
    cached = sorted(p.relative_to(store.cache_root).as_posix() for p in store.cache_root.rglob("*") if p.is_file())
    assert cached == ["models/versions/v2/index.ann"]
