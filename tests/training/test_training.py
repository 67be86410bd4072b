"""Training, versions and promotion: new version then pointer, staging, verification, rollback, pruning."""

import json
import signal
import subprocess
import sys
from datetime import timedelta

import pytest

from recommender.core import registry
from recommender.core.errors import Conflict, DataFileError, ModelUnavailable, StorageError
from recommender.core.storage import LocalStorage
from recommender.serving.model import load_model
from recommender.training import holdout
from recommender.training.pipeline import train
from recommender.training.recipe import ARTIFACTS, TrainingParams
from tests.conftest import ROOT


def quiet(_message):
    pass


def test_train_activates_a_complete_version(storage, tiny_csv):
    result = train(tiny_csv, storage, progress=quiet)
    assert registry.active_version(storage) == result.version
    manifest = registry.verify(storage, result.version)
    # the tiny data is too small for a re-ranker: the first stage's artifacts alone
    assert set(manifest["artifacts"]) == {*ARTIFACTS, holdout.CALIBRATION, holdout.CASES}
    assert manifest["evaluation"]["cases"] > 0
    assert manifest["source"]["file"] == "tiny.csv" and len(manifest["source"]["sha256"]) == 64
    counts = manifest["counts"]
    assert counts["items"] > 40 and counts["baskets"] > 200 and counts["rows_read"] > counts["rows_kept"]
    assert manifest["params"]["seed"] == 0
    model = load_model(storage, result.version)
    assert len(model.items) == counts["items"]


def test_progress_reports_every_stage(tmp_path, tiny_csv):
    lines = []
    result = train(tiny_csv, LocalStorage(tmp_path), progress=lines.append)
    text = "\n".join(lines)
    for expected in ("rows read", "rows dropped", "baskets", "items", "customers", "svd", "index", "saved version"):
        assert expected in text
    assert lines[-1].startswith("done in") and result.version in lines[-1]


def test_same_input_same_model(tmp_path, tiny_csv):
    a = train(tiny_csv, LocalStorage(tmp_path / "a"), progress=quiet)
    b = train(tiny_csv, LocalStorage(tmp_path / "b"), progress=quiet)
    assert a.manifest["artifacts"] == b.manifest["artifacts"]
    c = train(tiny_csv, LocalStorage(tmp_path / "c"), TrainingParams(factors=8), progress=quiet)
    assert c.manifest["artifacts"]["index.ann"] != a.manifest["artifacts"]["index.ann"]


def test_stage_does_not_touch_active_then_promote(storage, tiny_csv):
    first = train(tiny_csv, storage, progress=quiet)
    second = train(tiny_csv, storage, activate=False, progress=quiet)
    assert registry.active_version(storage) == first.version
    assert registry.staged(storage).version == second.version
    assert registry.promote_staged(storage) == second.version
    assert registry.active_version(storage) == second.version
    assert registry.staged(storage) is None
    with pytest.raises(ModelUnavailable, match="nothing is staged"):
        registry.promote_staged(storage)


def test_promote_refuses_damaged_stage(tmp_path, tiny_csv):
    storage = LocalStorage(tmp_path)
    first = train(tiny_csv, storage, progress=quiet)
    second = train(tiny_csv, storage, activate=False, progress=quiet)
    index = tmp_path / "models/versions" / second.version / "index.ann"
    index.write_bytes(index.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelUnavailable, match="index.ann is damaged"):
        registry.promote_staged(storage)
    assert registry.active_version(storage) == first.version


def test_rollback(storage, tiny_csv):
    first = train(tiny_csv, storage, progress=quiet)
    second = train(tiny_csv, storage, progress=quiet)
    assert registry.active_version(storage) == second.version
    assert registry.rollback(storage) == first.version
    assert registry.active_version(storage) == first.version
    with pytest.raises(Conflict, match="no earlier"):
        registry.rollback(storage)


def test_prune_keeps_the_newest_and_the_pointed(tmp_path, tiny_csv):
    storage = LocalStorage(tmp_path)
    versions = [train(tiny_csv, storage, keep_versions=2, progress=quiet).version for _ in range(4)]
    kept = registry.list_versions(storage)
    assert versions[-1] in kept and versions[-2] in kept
    assert versions[0] not in kept
    assert len(kept) <= 3


def test_failed_publish_leaves_active_model(tmp_path, tiny_csv):
    storage = LocalStorage(tmp_path)
    first = train(tiny_csv, storage, progress=quiet)
    original_write = storage.write

    def failing_write(key, data):
        if key.endswith("catalog.json"):
            raise StorageError(f"cannot write {key}: No space left on device")  # what LocalStorage says then
        original_write(key, data)

    storage.write = failing_write
    with pytest.raises(StorageError, match="catalog.json: No space"):
        train(tiny_csv, storage, progress=quiet)
    storage.write = original_write
    assert registry.active_version(storage) == first.version
    # What the failed publication wrote is gone; a killed one (no chance to clean up) leaves a version without
    # manifest, which is never activated.
    assert registry.list_versions(storage) == [first.version]
    unfinished = [first.version[:15] + "000Z-killed"]
    storage.write(registry.artifact_key(unfinished[0], "index.ann"), b"partial")
    with pytest.raises(ModelUnavailable, match="missing or incomplete"):
        registry.activate(storage, unfinished[0])
    # A young leftover may be an upload in progress: kept; an old one is cleaned away.
    assert registry.prune(storage, keep=5) == []
    later = registry.version_time(unfinished[0]) + timedelta(hours=1)
    assert registry.prune(storage, keep=5, now=lambda: later) == unfinished


@pytest.mark.parametrize("stage", ["item-item table", "svd:", "index:"])
def test_killed_training_leaves_active_model(tmp_path, tiny_csv, stage):
    """SIGKILL the training right after it reports a stage: the active model stays as it was and loadable."""
    storage = LocalStorage(tmp_path / "store")
    first = train(tiny_csv, storage, progress=quiet)
    # The process kills itself as it reports the stage: a kill sent from here could arrive after a tiny training
    # has already finished.
    script = f"""
import os, signal, sys
from recommender.core.storage import LocalStorage
from recommender.training.pipeline import train

def progress(message):
    print(message, flush=True)
    if message.startswith({stage!r}):
        os.kill(os.getpid(), signal.SIGKILL)

train(sys.argv[1], LocalStorage(sys.argv[2]), progress=progress)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tiny_csv), str(tmp_path / "store")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, f"the training never reported {stage!r}: {proc.stdout}{proc.stderr}"
    assert registry.active_version(storage) == first.version
    load_model(storage, first.version)


def test_too_few_items(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("InvoiceNo,StockCode,Description,CustomerID\n1,A1,x,\n1,B2,y,\n2,A1,x,\n")
    with pytest.raises(DataFileError, match="only 2 distinct item"):
        train(path, LocalStorage(tmp_path / "s"), progress=quiet)
    assert registry.active(LocalStorage(tmp_path / "s")) is None


def test_bad_file_leaves_active_model(tmp_path, tiny_csv):
    storage = LocalStorage(tmp_path / "s")
    first = train(tiny_csv, storage, progress=quiet)
    bad = tmp_path / "bad.csv"
    bad.write_text("a;b;c\n1;2;3\n")
    with pytest.raises(DataFileError):
        train(bad, storage, progress=quiet)
    assert registry.active_version(storage) == first.version
    assert registry.list_versions(storage) == [first.version]


def test_manifest_is_json_with_counts(tmp_path, tiny_csv):
    storage = LocalStorage(tmp_path)
    version = train(tiny_csv, storage, progress=quiet).version
    manifest = json.loads((tmp_path / "models/versions" / version / "manifest.json").read_text())
    assert manifest["version"] == version
    assert set(manifest["counts"]) >= {"rows_read", "baskets", "items", "customers", "dropped"}


def test_progress_lines_are_written_whole(monkeypatch):
    """The held-out model reports from a second thread: a line written in two calls (print's text, then its newline)
    could be split by the other thread's line."""
    import sys

    from recommender.training.recipe import say

    writes = []

    class Recorder:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Recorder())
    say("  holdout model: item-item table (0.1 s)")
    assert writes == ["  holdout model: item-item table (0.1 s)\n"]
