"""The package layout by runtime (DEVELOPERS.md, "Layout"): who may import whom, and what the Lambda layer ships."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "shared" / "recommender"
# Every module of the package lives in one of these, except the command line (cli.py, __main__.py, __init__.py).
RUNTIMES = ("core", "serving", "training", "local", "tools")
TRAINING_ONLY = ("pandas", "scipy", "openpyxl", "python_calamine", "pyspark", "threadpoolctl", "tqdm", "sklearn")
# What each part may not import (top-level packages, or recommender subpackages), function-local imports included.
FORBIDDEN = {
    "core": {"recommender.serving", "recommender.training", "recommender.tools", "recommender.local",
             "recommender.cli", "fastapi", "starlette", "uvicorn", *TRAINING_ONLY},
    "serving": {"recommender.training", "recommender.tools", "recommender.local", "recommender.cli", "uvicorn",
                "yaml", *TRAINING_ONLY},
    "training": {"recommender.serving.web", "recommender.tools", "recommender.local", "recommender.cli",
                 "fastapi", "starlette", "uvicorn", "mangum"},
    "functions": {"recommender.training", "recommender.tools", "recommender.local", "recommender.cli", "boto3",
                  "botocore", "annoy", "hashlib", "passlib", *TRAINING_ONLY},
}


def imported_names(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (relative imports resolved against the package)."""
    names = set()
    package = ".".join(path.relative_to(ROOT / "shared").with_suffix("").parts[:-1]) if PACKAGE in path.parents else ""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def violations(files: list[Path], forbidden: set[str]) -> list[str]:
    """'file imports name' for every import of a forbidden module or one of its submodules."""
    found = []
    for path in files:
        for name in sorted(imported_names(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path} imports {name}")
    return found


def part_files(part: str) -> list[Path]:
    """The Python files of one part of the layout."""
    if part == "functions":
        return sorted((ROOT / "functions").rglob("*.py"))
    return sorted((PACKAGE / part).rglob("*.py"))


def test_every_module_belongs_to_a_runtime():
    loose = {p.name for p in PACKAGE.glob("*.py")}
    assert loose == {"__init__.py", "__main__.py", "cli.py"}
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(RUNTIMES)


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_dependency_rule(part):
    assert part_files(part), part
    assert violations(part_files(part), FORBIDDEN[part]) == []


def test_the_rule_catches_a_bad_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from recommender.training.pipeline import train\n    import pandas as pd\n")
    names = {line.split(" imports ")[1] for line in violations([bad], FORBIDDEN["serving"])}
    assert names == {"pandas", "recommender.training.pipeline", "recommender.training.pipeline.train"}


LAYER_CHECK = r"""
import importlib, json, pkgutil, sys
sys.path.insert(0, sys.argv[1])
import recommender
assert recommender.__path__[0].startswith(sys.argv[1]), recommender.__path__
names = [m.name for m in pkgutil.walk_packages(recommender.__path__, "recommender.")]
for name in names:
    importlib.import_module(name)
heavy = sorted(m for m in ("pandas", "scipy", "openpyxl", "pyspark", "uvicorn", "yaml") if m in sys.modules)
print(json.dumps({"modules": names, "heavy": heavy}))
"""


def test_the_layer_ships_serving_code_only_and_it_imports_alone(tmp_path):
    """shared/Makefile's layer-source (what sam build and make build-lambda-pip copy) holds core and serving only,
    and every module there imports without training, tools or local code, and without pandas or scipy."""
    subprocess.run(["make", "--no-print-directory", "-C", str(ROOT / "shared"), "layer-source", f"TARGET={tmp_path}"],
                   check=True, capture_output=True)
    shipped = {p.relative_to(tmp_path / "recommender").parts[0] for p in (tmp_path / "recommender").iterdir()}
    assert shipped == {"__init__.py", "core", "serving"}
    result = subprocess.run([sys.executable, "-c", LAYER_CHECK, str(tmp_path)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert "recommender.serving.model" in outcome["modules"] and "recommender.core.registry" in outcome["modules"]
    assert outcome["heavy"] == []
