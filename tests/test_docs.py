"""The user guide: it builds strictly, every shell and Python block is marked, and the runnable ones still work and
still produce the example outputs the pages show (tests/docs_runner.py runs them)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests import docs_runner

pytestmark = pytest.mark.slow


def test_the_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs and mkdocs-material are not installed (pip install -e '.[docs]'; make devel does it)")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        cwd=docs_runner.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_shell_and_python_block_is_marked():
    bad = [where for page in docs_runner.pages() for where in docs_runner.unmarked(page)]
    assert not bad, "blocks without <!-- run --> or <!-- not run: reason --> on the line above: " + ", ".join(bad)


def test_the_marker_check_catches_an_unmarked_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```bash\nmake demo\n```\n\n<!-- not run: needs AWS -->\n```sh\nmake deploy\n```\n"
        "<!-- run -->\n```python\nprint(1)\n```\n\n```json\n{}\n```\n"
    )
    assert docs_runner.unmarked(page) == [f"{page}:3"]


def test_shapes_ignore_volatile_values_and_catch_changed_ones():
    one = '{"access_token": "eyJa.eyJb.c1", "n": 1, "items": [{"a": 0.5}]}'
    assert docs_runner.shape(one) == docs_runner.shape('{"access_token": "eyJx.eyJy.z", "n": 7, "items": [{"a": 2}]}')
    assert docs_runner.shape(one) != docs_runner.shape('{"access_token": "t", "n": 1, "items": []}')
    assert docs_runner.shape(one) != docs_runner.shape('{"token": "t", "n": 1, "items": [{"a": 0.5}]}')
    text = "saved version 20261202T083130538Z-2c6a991c6c3f (0.1 MB, 0.0 s)\nrows read: 2,230\n"
    assert docs_runner.shape(text) == docs_runner.shape(
        "saved version 20261203T000000000Z-0123456789ab (0.2 MB, 1.5 s)\nrows read: 2,231\n"
    )
    assert docs_runner.shape(text) != docs_runner.shape("saved version 20261202T083130538Z-2c6a991c6c3f\n")


RUNNABLE_PAGES = [p for p in docs_runner.pages() if docs_runner.blocks(p)]


@pytest.fixture(scope="module")
def page_runs(request):
    """The selected pages, started all together (a few at a time) when the first is needed; each page's future."""
    chosen = [
        item.callspec.params["page"]
        for item in request.session.items
        if getattr(item, "module", None) is request.module
        and getattr(item, "originalname", "") == "test_runnable_blocks_pass_and_give_the_examples_shown"
    ]
    pool, running = docs_runner.run_pages(chosen)
    yield running
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda p: p.name)
def test_runnable_blocks_pass_and_give_the_examples_shown(page, page_runs):
    result = page_runs[page].result()
    assert result.failure is None, result.failure
    problems = docs_runner.mismatches(result)
    assert not problems, "\n\n".join(problems)


def test_pages_run_at_once_each_in_its_own_sandbox(tmp_path):
    # Each page waits until all three have started: this passes only when they run at the same time.
    shared = tmp_path / "shared"
    shared.mkdir()
    names = ("one", "two", "three")
    pages = []
    for name in names:
        page = tmp_path / f"{name}.md"
        page.write_text(
            f"<!-- run -->\n```bash\nexport WHO={name}\necho $PORT > {shared}/{name}.port\ntouch data/{name}\n"
            f"for i in $(seq 200); do [ $(ls {shared} | wc -l) = 3 ] && break; sleep 0.1; done\n```\n\n"
            '<!-- run -->\n```bash\necho "$WHO $(ls data) $(ls ' + str(shared) + ' | wc -l)"\n```\n'
        )
        pages.append(page)
    pool, running = docs_runner.run_pages(pages)
    results = [running[page].result() for page in pages]
    pool.shutdown()
    for name, result in zip(names, results, strict=True):
        assert result.failure is None, result.failure
        # its own variables and its own data/ folder, after all three had started
        assert result.outputs[-1][1] == f"{name} {name} 3\n"
    ports = {(shared / f"{name}.port").read_text() for name in names}
    assert len(ports) == 3


def test_the_configuration_page_names_every_setting():
    from recommender.core import settings

    names = getattr(settings.Settings, "model_fields", None) or {
        f.name: f for f in dataclasses.fields(settings.Settings)
    }
    page = (docs_runner.DOCS / "configuration.md").read_text()
    missing = [name.upper() for name in names if f"`{name.upper()}`" not in page]
    assert not missing, f"docs/configuration.md does not describe {', '.join(missing)}"


def test_the_readme_layout_names_paths_that_exist():
    readme = (docs_runner.ROOT / "README.md").read_text()
    layout = readme[readme.index("## Developing") :]
    paths = [p for cell in re.findall(r"^\| (.+?) \|", layout, re.MULTILINE) for p in re.findall(r"`([^`]+)`", cell)]
    assert len(paths) >= 7
    missing = [p for p in paths if not (docs_runner.ROOT / p).exists()]
    assert not missing, f"README.md's layout names paths that do not exist: {missing}"


def makefile_targets() -> set[str]:
    """The Makefile's documented targets (a `## ` comment on their line: what `make help` lists)."""
    lines = (docs_runner.ROOT / "Makefile").read_text().splitlines()
    return {line.split(":")[0] for line in lines if line and line[0].isalpha() and ":" in line and "##" in line}


def named_targets(text: str) -> set[str]:
    """The targets a page names as `make <target>` (in code, possibly followed by variables)."""
    return set(re.findall(r"`make ([A-Za-z][\w-]*)", text))


def test_every_make_target_is_on_the_commands_page_the_readme_links():
    readme = (docs_runner.ROOT / "README.md").read_text()
    assert "(docs/commands.md)" in readme
    targets = makefile_targets()
    assert {"demo", "train", "bench-spark"} <= targets
    missing = sorted(targets - named_targets((docs_runner.DOCS / "commands.md").read_text()))
    assert not missing, f"docs/commands.md does not name make {', '.join(missing)}"
    assert named_targets("`make bench-train`, `make run-prod PORT=1`") == {"bench-train", "run-prod"}


# What belongs in CHANGELOG.md and bench/results/, not in a page of the guide.
HISTORY = [
    (re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE), "an issue number"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b"), "a commit hash"),
    (re.compile(r"(?<![\w.])\.\./"), "a path outside the repository"),
    # A working session, not a shopper's (sessions are what the analytics count: "revenue per session").
    (
        re.compile(r"\b(?:this|that|previous|earlier|last|next|my|our) session\b(?! ?storage| expired)", re.IGNORECASE),
        "a word of development history",
    ),
    (
        re.compile(r"development machine|as of my knowledge|left for a later change|what did not help", re.IGNORECASE),
        "development history",
    ),
]


def test_guide_pages_hold_no_development_history():
    found = []
    for page in docs_runner.pages():
        if page.name == "changelog.md":
            continue
        for number, line in enumerate(page.read_text().split("\n"), 1):
            found += [
                f"{docs_runner.name(page)}:{number}: {what}: {line.strip()}"
                for pattern, what in HISTORY
                if pattern.search(line)
            ]
    assert not found, "\n".join(found)


def test_the_api_page_names_every_route_of_the_template():
    template = (docs_runner.ROOT / "template.yaml").read_text()
    routes = set(re.findall(r"Method: (\w+), Path: (/[^}\s]*)", template))
    assert len(routes) >= 12
    page = (docs_runner.DOCS / "api.md").read_text()
    missing = [
        f"{method} {path}"
        for method, path in sorted(routes)
        if not re.search(rf"`({method} )?{re.escape(path)}[`?]", page)
    ]
    assert not missing, f"docs/api.md does not describe {', '.join(missing)}"


def test_a_changed_output_is_reported_and_rewritten(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        '<!-- run -->\n```bash\necho hi\n```\n\n```text\n--8<-- "examples/x.txt"\n```\n\n'
        '<!-- run -->\n```bash\necho there\n```\n\n```json\n{"a": 1}\n```\n'
    )
    first, second = docs_runner.blocks(page)
    example = docs_runner.DOCS / "examples" / "x.txt"
    assert first.example == example and second.inline is not None
    first.example = tmp_path / "x.txt"
    first.example.write_text("hello\n")
    result = docs_runner.PageResult(page, [(first, "hi\n"), (second, '{"a": 2, "b": 3}\n')])
    problems = docs_runner.mismatches(result)
    assert len(problems) == 2 and "x.txt" in problems[0] and f"{page}:15" in problems[1]
    assert docs_runner.write(result) == [first.example, page]
    assert first.example.read_text() == "hi\n"
    assert '```json\n{"a": 2, "b": 3}\n```' in page.read_text()
    assert not docs_runner.mismatches(docs_runner.PageResult(page, [(first, "hi\n")]))


def test_every_example_file_is_shown_by_a_page():
    shown = {block.example.name for page in docs_runner.pages() for block in docs_runner.blocks(page) if block.example}
    files = {path.name for path in (docs_runner.DOCS / "examples").glob("*.txt")}
    assert shown <= files, f"pages include examples that do not exist: {sorted(shown - files)} (make docs-examples)"
    assert files <= shown, f"docs/examples/ holds files no page shows: {sorted(files - shown)}"
