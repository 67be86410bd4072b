"""The light install (make demo): without the optional packages the product imports, trains from csv and gives the
same model; a command that needs a missing one stops with one line naming the extra that installs it."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from recommender.core import extras, registry
from recommender.core.errors import MissingExtra
from recommender.core.storage import LocalStorage
from recommender.tools import synthetic
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# What the light install leaves out: the extras' packages, and what only the dev extra brings.
ABSENT = (
    "pyarrow",
    "boto3",
    "botocore",
    "s3transfer",
    "pyspark",
    "py4j",
    "moto",
    "matplotlib",
    "playwright",
    "schemathesis",
    "cfnlint",
    "mkdocs",
    "ruff",
)
# Python as in a venv of the light install: the packages above cannot be imported (a finder ahead of the others
# says they are not there, as the import system itself would).
LIGHT_PYTHON = f"""
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
"""


def light(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `code` (after LIGHT_PYTHON) in a new interpreter with args."""
    return subprocess.run(
        [sys.executable, "-c", LIGHT_PYTHON + code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )


def light_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m recommender args` in the light install."""
    return light("from recommender.cli import main\nsys.exit(main(sys.argv[1:]))", *args, env=env)


def names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name for r in requirements}


def test_the_light_install_leaves_the_extras_out():
    base = names(PYPROJECT["dependencies"])
    optional = PYPROJECT["optional-dependencies"]
    assert not base & {"pyarrow", "boto3", "pyspark", "moto", "matplotlib", "playwright", "mkdocs", "ruff"}
    # every optional package the code asks for by name is installed by the extra its message names
    for package, extra in extras.EXTRA.items():
        assert package in names(optional[extra]), (package, extra)
    # make devel / make test: the dev extra brings every other extra
    assert Requirement(optional["dev"][0]).extras == set(optional) - {"dev"}


def test_missing_package_named_with_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what `import pyarrow` meets when it is not installed
    with pytest.raises(MissingExtra) as err:
        extras.optional("pyarrow", "Parquet input")
    assert err.value.message == "Parquet input needs pyarrow: make devel installs it (or pip install -e '.[parquet]')"


def test_a_broken_install_is_not_reported_as_a_missing_extra(monkeypatch, tmp_path):
    # an installed optional package whose own import fails says so, not "install the extra"
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(extras.EXTRA, "brokenpkg", "parquet")
    with pytest.raises(ModuleNotFoundError) as err:
        extras.optional("brokenpkg", "something")
    assert err.value.name == "not_a_module_anywhere"


def test_every_module_imports_without_the_extras():
    done = light(
        """
import importlib, pkgutil, recommender
failed = []
for info in pkgutil.walk_packages(recommender.__path__, "recommender."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
    except Exception as err:
        failed.append(f"{info.name}: {type(err).__name__}: {err}")
print("\\n".join(failed))
print("imported:", sorted(m for m in sys.modules if m.partition(".")[0] in ABSENT))
""".replace("ABSENT", repr(ABSENT))
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported: []"


def test_training_from_csv_without_pyarrow_gives_the_same_model(tiny_csv, trained_folder, tmp_path):
    # without Arrow's csv reader, pandas' reads the file (slower on big files): the same artifacts, byte for byte
    done = light_cli("--storage", str(tmp_path / "store"), "train", str(tiny_csv))
    assert done.returncode == 0, done.stderr
    ours_dir, theirs_dir = (
        folder / "models" / "versions" / registry.active_version(LocalStorage(folder))
        for folder in (tmp_path / "store", trained_folder)
    )
    files = sorted(p.name for p in theirs_dir.iterdir() if p.name != "manifest.json")
    assert files and sorted(p.name for p in ours_dir.iterdir() if p.name != "manifest.json") == files
    assert filecmp.cmpfiles(ours_dir, theirs_dir, files, shallow=False)[0] == files


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parquet") / "parts"
    synthetic.write_parquet_parts(synthetic.TINY, folder)
    return next(folder.glob("*.parquet"))


@pytest.mark.parametrize(
    "command, message",
    [
        (
            ["train", "{parquet}"],
            "Parquet input needs pyarrow: make devel installs it (or pip install -e '.[parquet]')",
        ),
        (
            ["train", "{csv}", "--engine", "spark"],
            "ENGINE=spark needs pyspark: make devel installs it (or pip install -e '.[spark]')",
        ),
        (
            ["train", "s3://bucket/sales.csv"],
            "s3:// input needs boto3: make devel installs it (or pip install -e '.[s3]')",
        ),
        (
            ["--storage", "s3://bucket/prefix", "list-users"],
            "STORAGE_URL=s3://bucket/prefix needs boto3: make devel installs it (or pip install -e '.[s3]')",
        ),
        (
            ["export", "--out", "{out}/fbt.parquet"],
            "FORMAT=parquet needs pyarrow: make devel installs it (or pip install -e '.[parquet]')",
        ),
    ],
)
def test_a_command_needing_a_missing_extra_says_which(
    command, message, parquet_file, tiny_csv, trained_storage, tmp_path
):
    before = sorted(p.relative_to(trained_storage.root) for p in Path(trained_storage.root).rglob("*"))
    args = [a.format(parquet=parquet_file, csv=tiny_csv, out=tmp_path) for a in command]
    done = light_cli(*args, env={"STORAGE_URL": str(trained_storage.root)})
    assert (done.returncode, done.stderr) == (1, f"error: {message}\n")
    # nothing written: no model, no partial export
    assert sorted(p.relative_to(trained_storage.root) for p in Path(trained_storage.root).rglob("*")) == before
    assert not list(tmp_path.glob("*fbt*"))
