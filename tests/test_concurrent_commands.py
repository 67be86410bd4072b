"""Commands racing on one storage as separate processes, as operators run them: two `make train` at once, and
`make rollback` against `make load_after_parallel_train`, on local disk and on S3 (moto's server over HTTP).
Whatever the interleaving, every pointer names a complete version, no version of the rollback history is lost, and
a command that loses says so in one line. (The interleavings themselves are pinned down in tests/core/test_pointers.py.)"""

import os
import subprocess
import uuid

import boto3
import pytest

from recommender.core import registry
from recommender.core.storage import LocalStorage, S3Storage
from recommender.training.pipeline import train
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(params=["local", "s3"])
def shared_storage(request, tmp_path):
    """(environment of the commands, the same storage opened here)."""
    env = {**os.environ, "RUN_DIR": str(tmp_path / "run"), "CACHE_DIR": str(tmp_path / "cache")}
    if request.param == "local":
        env["STORAGE_URL"] = str(tmp_path / "data")
        return env, LocalStorage(tmp_path / "data")
    endpoint = request.getfixturevalue("moto_server")
    bucket = f"race-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=bucket)
    env.update(CREDENTIALS, STORAGE_URL=f"s3://{bucket}/shop", AWS_ENDPOINT_URL=endpoint)
    return env, S3Storage(client, bucket, "shop", cache_dir=str(tmp_path / "here-cache"))


def together(env: dict, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Start every make command at once; wait for all."""
    started = [
        subprocess.Popen(
            ["make", "--no-print-directory", *c],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for c in commands
    ]
    results = []
    for command, process in zip(commands, started):
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    for result in results:
        assert "Traceback" not in result.stderr, result.stderr
    return results


def assert_whole(storage, pointer: registry.Pointer) -> None:
    """The pointer and its whole history name complete, intact versions, none twice."""
    named = [pointer.version, *pointer.previous]
    assert len(set(named)) == len(named), named
    for version in named:
        assert registry.version_problem(storage, version) is None, version


def test_two_trainings_at_once(shared_storage, tiny_csv):
    env, storage = shared_storage
    first = train(tiny_csv, storage, progress=lambda _m: None).version
    results = together(env, ["train", f"PATH_TO_DATA={tiny_csv}"], ["train", f"PATH_TO_DATA={tiny_csv}"])
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    new = set(registry.list_versions(storage)) - {first}
    pointer = registry.active(storage)
    assert len(new) == 2 and {pointer.version, pointer.previous[0]} == new and pointer.previous[1] == first
    assert_whole(storage, pointer)
    # Two rollbacks walk back through both trainings.
    assert registry.rollback(storage) == pointer.previous[0] and registry.rollback(storage) == first


def test_rollback_racing_a_promotion(shared_storage, tiny_csv):
    env, storage = shared_storage
    a, b, staged = (train(tiny_csv, storage, activate=i < 2, progress=lambda _m: None).version for i in range(3))
    rolled, promoted = together(env, ["rollback"], ["load_after_parallel_train"])
    assert promoted.returncode == 0, promoted.stderr
    final = registry.active(storage)
    outcomes = {
        (staged, (a,)): "rollback first, then the promotion on top (or the promotion retried on top of it)",
        (staged, (b, a)): "the promotion first, and the rollback gave up",
        (b, (a,)): "the promotion first, then the rollback undid it",
    }
    assert (final.version, final.previous) in outcomes, final
    if (final.version, final.previous) == (staged, (b, a)):
        errors = [line for line in rolled.stderr.strip().splitlines() if not line.startswith("make: ")]
        assert rolled.returncode != 0 and len(errors) == 1 and "nothing was rolled back" in errors[0], rolled.stderr
    else:
        assert rolled.returncode == 0, rolled.stderr
    assert registry.staged(storage) is None
    assert_whole(storage, final)


def test_feed_and_rules_uploads_racing_each_other(shared_storage, tmp_path):
    env, storage = shared_storage
    if isinstance(storage, LocalStorage):
        pytest.skip("four processes at once cost seconds: S3 only (the disk's lock is raced by two trainings above)")
    (tmp_path / "a.csv").write_text("id,availability,price\nA1,in_stock,1.5\nB2,in_stock,2\n")
    (tmp_path / "b.csv").write_text("id,availability,price\nA1,out_of_stock,1.5\n")
    (tmp_path / "r1.yaml").write_text('boost:\n  - {category: "Kitchen", factor: 1.5}\n')
    (tmp_path / "r2.yaml").write_text('bury:\n  - {category: "Kitchen", factor: 0.5}\n')
    # The second feed upload by the target's earlier name, which still works.
    results = together(
        env,
        ["feed", f"PATH_TO_FEED={tmp_path / 'a.csv'}"],
        ["rules", f"PATH_TO_RULES={tmp_path / 'r1.yaml'}"],
        ["catalog", f"PATH_TO_CATALOG={tmp_path / 'b.csv'}"],
        ["rules", f"PATH_TO_RULES={tmp_path / 'r2.yaml'}"],
    )
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    for kind in (registry.FEED, registry.RULES):
        pointer = registry.active(storage, kind)
        assert sorted([pointer.version, *pointer.previous]) == registry.list_versions(storage, kind)  # both, once
        for version in (pointer.version, *pointer.previous):
            assert registry.version_problem(storage, version, kind) is None
