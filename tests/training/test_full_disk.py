"""A full disk (ENOSPC) under a training: where the storage lives, or where the model's files are built. The
training stops with one line, leaves nothing half-written behind, and the active model stays."""

import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from recommender import cli
from recommender.core import registry
from recommender.core.errors import StorageError
from recommender.core.storage import LocalStorage


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones too: temporary files, locks) with its content."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(captured) -> str:
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of a given size (KiB) under tmp_path: needs root (skipped otherwise)."""
    mounted: list[Path] = []

    def mount(kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        target = tmp_path / f"disk-{len(mounted)}"
        target.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0700", "tmpfs", str(target)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


class FillingStorage(LocalStorage):
    """A local storage whose disk is full after a few writes: every later write fails as LocalStorage reports ENOSPC."""

    def __init__(self, root: Path, writes: int) -> None:
        super().__init__(root)
        self.writes = writes

    def write(self, key: str, data: bytes) -> None:
        if self.writes <= 0:
            raise StorageError(f"cannot write {key} in {self.url}: No space left on device")
        self.writes -= 1
        super().write(key, data)


def test_a_storage_that_fills_up_keeps_nothing_of_the_training(trained_storage, tiny_csv, capsys, monkeypatch):
    before = snapshot(trained_storage.root)
    full = FillingStorage(trained_storage.root, writes=3)
    monkeypatch.setattr(cli.models, "open_storage", lambda _settings: full)
    assert cli.main(["train", str(tiny_csv)]) == 1
    line = one_error_line(capsys.readouterr())
    assert "No space left on device" in line and "models/versions/" in line
    assert snapshot(trained_storage.root) == before  # the three artifacts it did write are gone again


def test_full_disk_under_the_storage(trained_storage, tiny_csv, small_disk, capfd, monkeypatch):
    files = snapshot(trained_storage.root)
    pages = sum(math.ceil(len(data) / 4096) for data in files.values())
    # Room for the active model and about half of another one.
    disk = small_disk(pages * 4 * 3 // 2)
    shutil.copytree(trained_storage.root, disk, dirs_exist_ok=True)
    before = snapshot(disk)
    monkeypatch.setenv("STORAGE_URL", str(disk))
    assert cli.main(["train", str(tiny_csv)]) == 1
    line = one_error_line(capfd.readouterr())
    assert line.startswith("error: cannot write models/versions/") and line.endswith("No space left on device")
    assert snapshot(disk) == before  # no artifact, no temporary file, same pointer
    assert registry.active_version(LocalStorage(disk)) == registry.active_version(trained_storage)


def test_full_disk_where_the_model_is_built(trained_storage, tiny_csv, small_disk, capfd, monkeypatch):
    scratch = small_disk(16)
    before = snapshot(trained_storage.root)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert cli.main(["train", str(tiny_csv)]) == 1
    line = one_error_line(capfd.readouterr())  # Annoy's own message on stderr is silenced
    assert line.startswith(f"error: cannot write the model's files in {scratch}: ") and "TMPDIR" in line
    assert "No space left on device" in line
    assert snapshot(scratch) == {} and not any(scratch.iterdir())
    assert snapshot(trained_storage.root) == before


def test_a_short_write_there_is_named_a_full_disk(small_disk, monkeypatch):
    # numpy reports a full disk as "N requested and M written" with no errno: still one message naming the cause.
    import numpy as np

    from recommender.training.engine import scratch_folder

    scratch = small_disk(16)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(StorageError) as raised:
        with scratch_folder() as folder:
            np.save(folder / "big.npy", np.zeros(100_000))
    message = str(raised.value)
    assert message.startswith(f"cannot write the model's files in {scratch}: No space left on device (")
    assert "TMPDIR" in message and not any(scratch.iterdir())
