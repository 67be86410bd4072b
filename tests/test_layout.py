"""The package layout by runtime (DEVELOPERS.md, "Layout"): who may import whom, no import cycle, the harness kept
out of the installed package, and what the Lambda layer ships."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "shared" / "recommender"
# Every module of the package lives in one of these, except the command line (cli/, __main__.py, __init__.py).
RUNTIMES = ("core", "serving", "training", "local", "tools")
TRAINING_ONLY = (
    "pandas",
    "scipy",
    "openpyxl",
    "python_calamine",
    "pyspark",
    "threadpoolctl",
    "tqdm",
    "sklearn",
    "duckdb",
)
# What each part may not import (top-level packages, or recommender subpackages), function-local imports included.
FORBIDDEN = {
    "core": {
        "recommender.serving",
        "recommender.training",
        "recommender.tools",
        "recommender.local",
        "recommender.cli",
        "fastapi",
        "starlette",
        "uvicorn",
        *TRAINING_ONLY,
    },
    "serving": {
        "recommender.training",
        "recommender.tools",
        "recommender.local",
        "recommender.cli",
        "uvicorn",
        "yaml",
        *TRAINING_ONLY,
    },
    "training": {
        "recommender.serving.web",  # the web layer: the app factory and the modules it is made of
        "recommender.serving.resources",
        "recommender.serving.callers",
        "recommender.serving.json_bodies",
        "recommender.serving.http_errors",
        "recommender.serving.middleware",
        "recommender.tools",
        "recommender.local",
        "recommender.cli",
        "fastapi",
        "starlette",
        "uvicorn",
        "mangum",
    },
    "functions": {
        "recommender.training",
        "recommender.tools",
        "recommender.local",
        "recommender.cli",
        "boto3",
        "botocore",
        "annoy",
        "hashlib",
        "passlib",
        *TRAINING_ONLY,
    },
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
    assert loose == {"__init__.py", "__main__.py"}
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {*RUNTIMES, "cli"}


def test_the_harness_is_not_installed():
    """tools/ holds product tools only; the benchmark, soak, fuzz and fault-proxy harness is the repository's own
    bench/ package, which setuptools does not install and nothing installed or deployed imports."""
    tools = {p.name for p in (PACKAGE / "tools").iterdir() if p.name != "__pycache__"}
    assert tools == {
        "__init__.py",
        "evaluation.py",
        "evaluation_protocol.py",
        "baselines.py",
        "product_evaluation.py",
        "evaluation_report.py",
        "new_items_evaluation.py",
        "export.py",
        "synthetic",
        "event_report.py",
        "retrain.py",
        "experiment_report.py",
        "report_html.py",
        "shop_simulator.py",
        "shop_http.py",
        "analytics_runs.py",
    }
    assert (ROOT / "bench" / "__main__.py").is_file()
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert find["where"] == ["shared"]
    deployed = sorted(PACKAGE.rglob("*.py")) + part_files("functions")
    assert violations(deployed, {"bench"}) == []


def test_the_harness_rule_catches_a_function_local_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from bench.common import median\n    import bench\n")
    assert violations([bad], {"bench"}) == [
        f"{bad} imports bench",
        f"{bad} imports bench.common",
        f"{bad} imports bench.common.median",
    ]


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_dependency_rule(part):
    assert part_files(part), part
    assert violations(part_files(part), FORBIDDEN[part]) == []


def test_the_rule_catches_a_bad_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from recommender.training.pipeline import train\n    import pandas as pd\n")
    names = {line.split(" imports ")[1] for line in violations([bad], FORBIDDEN["serving"])}
    assert names == {"pandas", "recommender.training.pipeline", "recommender.training.pipeline.train"}


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package in root/package by its dotted name (a package by its own name)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports, anywhere in it (function-local imports and those under
    `if TYPE_CHECKING:` included); `from a import b` counts as importing a.b when that is a module, else a."""
    modules = module_files(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = here.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(filter(None, (base, node.module)))
                targets.update(
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names
                )
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def knots(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import one another, directly or not (strongly connected components of more than
    one module, Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = [stack.pop()]
            while group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def cycle_through(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """The shortest import cycle from the group's first module back to it (breadth first, within the group)."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    return group


def test_the_package_has_no_import_cycle():
    graph = import_graph(ROOT / "shared", "recommender")
    found = [
        f"{' -> '.join(cycle_through(group, graph))} (importing one another: {', '.join(group)})"
        for group in knots(graph)
    ]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_the_cycle_check_catches_a_function_local_cycle(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from .c import x\n")
    (package / "sub" / "c.py").write_text("def f():\n    from ..a import y\n")
    (package / "d.py").write_text("import pkg.a\nfrom pkg import sub\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.sub.c"} and graph["pkg.d"] == {"pkg.a", "pkg.sub"}
    assert knots(graph) == [["pkg.a", "pkg.sub.b", "pkg.sub.c"]]
    assert cycle_through(knots(graph)[0], graph) == ["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]


LAYER_CHECK = r"""
import importlib, json, pkgutil, sys
sys.path.insert(0, sys.argv[1])
import recommender
assert recommender.__path__[0].startswith(sys.argv[1]), recommender.__path__
names = [m.name for m in pkgutil.walk_packages(recommender.__path__, "recommender.")]
for name in names:
    importlib.import_module(name)
# (yaml is no longer among them: the layer ships pyyaml, which core.rules_yaml reads the console's rules text with)
heavy = sorted(m for m in ("pandas", "scipy", "openpyxl", "pyspark", "uvicorn") if m in sys.modules)
print(json.dumps({"modules": names, "heavy": heavy}))
"""


def test_the_layer_ships_serving_code_only_and_it_imports_alone(tmp_path):
    """shared/Makefile's layer-source (what sam build and make build-lambda-pip copy) holds core and serving only,
    and every module there imports without training, tools or local code, and without pandas or scipy."""
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT / "shared"), "layer-source", f"TARGET={tmp_path}"],
        check=True,
        capture_output=True,
    )
    shipped = {p.relative_to(tmp_path / "recommender").parts[0] for p in (tmp_path / "recommender").iterdir()}
    assert shipped == {"__init__.py", "core", "serving"}
    result = subprocess.run(
        [sys.executable, "-c", LAYER_CHECK, str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert "recommender.serving.model" in outcome["modules"] and "recommender.core.registry" in outcome["modules"]
    assert outcome["heavy"] == []
