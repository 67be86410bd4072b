"""Runs the guide's runnable blocks and checks or rewrites the example outputs they produce (test harness).

Conventions (README.md and docs/*.md):
- every ```bash, ```sh or ```python fence is preceded, on the line just above, by `<!-- run -->` (executed here) or
  `<!-- not run: <reason> -->`;
- a fence directly after a runnable block (only blank lines between) holds that block's output: either the one
  line `--8<-- "examples/NAME.txt"` (the output lives in docs/examples/NAME.txt) or, in README.md, the output itself.

Each page runs in its own sandbox: a temporary folder that looks like the repository's root (its files and the
project's venv linked in, a fresh data/ folder), with STORAGE_URL set to that data/ folder, PORT a free port, the
venv's bin first on PATH; its blocks run in page order in one shell environment (variables set in one block are
seen by the next), each with a timeout; a server the page started is stopped afterwards, even on failure. A few
pages run at once (nothing of one sandbox is seen by another; each has its own port). Outputs
are normalized (sandbox path -> ".", port -> 8090) so that they read as they would in a user's clone.

`python tests/docs_runner.py` checks every page; `--write` (make docs-examples) rewrites the outputs instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
SHELLS = {"bash", "sh", "shell"}
LANGUAGES = SHELLS | {"python", "py"}
RUN = re.compile(r"^<!--\s*run\s*-->$")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*\S.*-->$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)[^\n]*$")
INCLUDE = re.compile(r'^\s*--8<--\s+"(examples/[\w.-]+\.txt)"\s*$')
BLOCK_SECONDS = 120
SHOWN_PORT = "8090"
# Nothing of the caller's configuration leaks into a page's run.
SETTINGS_VARIABLES = (
    "STORAGE_URL",
    "AWS_ENDPOINT_URL",
    "JWT_SECRET",
    "JWT_SECRET_ARN",
    "JWT_ALGORITHM",
    "TOKEN_MINUTES",
    "HOST",
    "PORT",
    "RUN_DIR",
    "CACHE_DIR",
    "PRELOAD_MODEL",
    "ANSWER_CACHE",
    "MODEL_POLL_SECONDS",
    "KEY_RATE_DEFAULT",
    "KEEP_VERSIONS",
    "ENCODING",
    "MAX_TRAINING_GB",
    "BCRYPT_ROUNDS",
    "MIN_PASSWORD_LENGTH",
    "USER_CACHE_SECONDS",
    "MAX_BODY_BYTES",
    "EVENTS_MAX_BATCH",
    "EVENTS_MAX_BODY_BYTES",
    "EVENTS_DEDUPE_IDS",
    "EVENTS_DEDUPE_SECONDS",
    "LOG_LEVEL",
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
)
# Entries of the repository root a sandbox does not link: its own data/, and what a run may write.
NOT_LINKED = {".git", "data", "site", "reports", ".pytest_cache"}


@dataclass
class Fence:
    """One fenced block of a page: where it starts, its language, its text and the marker above it."""

    line: int  # 1-based line of the opening fence
    language: str
    text: str
    marker: str | None  # "run", "not run" or None
    end: int  # 0-based index of the closing fence line


@dataclass
class Block:
    """A runnable block and where its output goes (an example file, text inline in the page, or nowhere)."""

    page: Path
    fence: Fence
    example: Path | None = None  # docs/examples/NAME.txt
    inline: Fence | None = None  # README.md: the output fence itself


@dataclass
class PageResult:
    """What running one page gave: each block's normalized output, and the first failure if any."""

    page: Path
    outputs: list[tuple[Block, str]] = field(default_factory=list)
    failure: str | None = None
    seconds: list[float] = field(default_factory=list)  # each block's wall time


def pages() -> list[Path]:
    """README.md and every page of the guide, in a stable order."""
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def fences(text: str) -> list[Fence]:
    """Every fenced block of a Markdown text, with the marker comment on the line just above it."""
    lines = text.split("\n")
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, language = m.group(1), m.group(2), m.group(3).lower()
        j = i + 1
        while j < len(lines) and not re.match(
            rf"^{re.escape(indent)}{re.escape(ticks[0])}{{{len(ticks)},}}\s*$", lines[j]
        ):
            j += 1
        above = lines[i - 1].strip() if i > 0 else ""
        marker = "run" if RUN.match(above) else "not run" if NOT_RUN.match(above) else None
        body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : j])
        found.append(Fence(i + 1, language, body, marker, j))
        i = j + 1
    return found


def unmarked(page: Path) -> list[str]:
    """The shell and Python fences of a page that carry neither marker (each as 'page:line')."""
    return [f"{name(page)}:{f.line}" for f in fences(page.read_text()) if f.language in LANGUAGES and f.marker is None]


def name(path: Path) -> str:
    """A path as the messages show it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def blocks(page: Path) -> list[Block]:
    """A page's runnable blocks in order, each with the output fence that follows it, if any."""
    text = page.read_text()
    lines = text.split("\n")
    all_fences = fences(text)
    found = []
    for k, f in enumerate(all_fences):
        if f.marker != "run" or f.language not in LANGUAGES:
            continue
        block = Block(page, f)
        nxt = all_fences[k + 1] if k + 1 < len(all_fences) else None
        if (
            nxt is not None
            and nxt.language not in LANGUAGES
            and all(not line.strip() for line in lines[f.end + 1 : nxt.line - 1])
        ):
            include = INCLUDE.match(nxt.text.strip()) if "\n" not in nxt.text.strip() else None
            if include:
                block.example = DOCS / include.group(1)
            else:
                block.inline = nxt
        found.append(block)
    return found


_given_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A TCP port nobody listens on right now, and never handed to another page of this run (pages run at once)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _ports_lock:
            if port not in _given_ports:
                _given_ports.add(port)
                return port


def sandbox(folder: Path) -> None:
    """Make `folder` look like the repository's root: every entry linked, except a fresh data/ folder."""
    for entry in ROOT.iterdir():
        if entry.name not in NOT_LINKED | {"pyproject.toml"}:
            (folder / entry.name).symlink_to(entry)
    (folder / "data").mkdir()
    # A copy dated long ago: make never reinstalls from the sandbox (that would point the project's venv at it).
    shutil.copyfile(ROOT / "pyproject.toml", folder / "pyproject.toml")
    os.utime(folder / "pyproject.toml", (0, 0))


def environment(folder: Path, port: int) -> dict[str, str]:
    """The page's starting environment: the caller's, minus its settings, plus the sandbox's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SETTINGS_VARIABLES and not k.startswith(("PYTEST_", "LOGIN_", "S3_", "MAX_", "HEADER_"))
    }
    venv_bin = Path(sys.executable).parent  # the project's venv: the python running this
    env.update(
        STORAGE_URL=str(folder / "data"),
        PORT=str(port),
        PATH=f"{venv_bin}:{env.get('PATH', '')}",
        HOME=env.get("HOME", str(folder)),
        PYTHONDONTWRITEBYTECODE="1",
        TERM="dumb",
        NO_COLOR="1",
        PAGER="cat",
        BCRYPT_ROUNDS="4",  # fast password hashing, as in the test suite: only time changes
    )
    return env


# The shell that runs one block: the page's environment so far, the block under `set -e`, then every variable
# (all exported by `set -a`) saved for the next block.
WRAPPER = """set -a
[ -f "$__DOCS_STATE" ] && . "$__DOCS_STATE"
cd "$__DOCS_ROOT"
set -e -o pipefail
{body}
set +e
export -p | grep -v '^declare -x __DOCS_' > "$__DOCS_STATE"
"""


def run_block(block: Block, folder: Path, env: dict[str, str], state: Path) -> tuple[int, str]:
    """Run one block in the sandbox; its exit status and its output (stdout and stderr as a terminal shows them)."""
    work = folder.parent
    if block.fence.language in SHELLS:
        script = work / "block.sh"
        script.write_text(block.fence.text + "\n")
        body = '. "$__DOCS_BLOCK"'
    else:
        script = work / "block.py"
        script.write_text(block.fence.text + "\n")
        body = 'python "$__DOCS_BLOCK"'
    env = {**env, "__DOCS_STATE": str(state), "__DOCS_ROOT": str(folder), "__DOCS_BLOCK": str(script)}
    proc = subprocess.Popen(
        ["bash", "--noprofile", "--norc", "-c", WRAPPER.format(body=body)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=BLOCK_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        return -9, out + f"\n[timed out after {BLOCK_SECONDS} s]"
    return proc.returncode, out


def normalize(text: str, folder: Path, port: int) -> str:
    """An output as a user would see it in their clone: sandbox paths relative, the default port."""
    text = text.replace(str(folder.resolve()), ".").replace(str(folder), ".")
    text = re.sub(rf"(?<!\d){port}(?!\d)", SHOWN_PORT, text)
    return "\n".join(line.rstrip() for line in text.rstrip("\n").split("\n")) + "\n"


def run_dir(folder: Path, env: dict[str, str], state: Path) -> Path | None:
    """The RUN_DIR the page's commands used (the default, or what a block set): where the pid files are; None
    when it cannot be told."""
    script = f'[ -f "{state}" ] && . "{state}"; cd "{folder}" && printf %s "${{RUN_DIR:-./data/run}}"'
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not done.stdout:
        return None
    return folder / done.stdout  # an absolute RUN_DIR replaces the folder


def stop_servers(folder: Path, env: dict[str, str], state: Path) -> None:
    """Stop what a page may have left running (the background server, the S3 emulator), by their pid files (two
    commands: not run when the page left no pid file)."""
    found = run_dir(folder, env, state)
    if found is not None and not any((found / name).exists() for name in ("server.pid", "s3-emulator.pid")):
        return
    script = (
        f'[ -f "{state}" ] && . "{state}"; cd "{folder}"; '
        "python -m recommender stop >/dev/null 2>&1; python -m recommender emulate-s3-stop >/dev/null 2>&1; true"
    )
    subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )


def run_page(page: Path) -> PageResult:
    """Run a page's blocks in order in a fresh sandbox; stop at the first failing block."""
    result = PageResult(page)
    todo = blocks(page)
    if not todo:
        return result
    if not list((ROOT / ".venv").glob(".installed*")):
        # make would install the project from the sandbox, into the project's venv, pointing at the sandbox
        result.failure = "the project is not installed in .venv: run `make devel` (or `make test`) first"
        return result
    keep = os.environ.get("DOCS_RUNNER_KEEP")  # set: the sandboxes stay, for a look at a failure
    with (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="docs-"))
        if keep
        else tempfile.TemporaryDirectory(prefix="docs-")
    ) as tmp:
        folder = Path(tmp) / "repo"
        folder.mkdir()
        sandbox(folder)
        port = free_port()
        env = environment(folder, port)
        state = Path(tmp) / "state.sh"
        try:
            for block in todo:
                started = time.monotonic()
                status, out = run_block(block, folder, env, state)
                result.seconds.append(time.monotonic() - started)
                out = normalize(out, folder, port)
                if status != 0:
                    result.failure = (
                        f"{name(page)}:{block.fence.line}: the block exited with status {status}; its output:\n{out}"
                    )
                    break
                result.outputs.append((block, out))
        finally:
            stop_servers(folder, env, state)
    return result


# Pages at once: their blocks mostly wait (servers starting, `sleep`s for a poll), so on two cores three pages take
# about a third of the time one after another does. Each page has its own sandbox, data/ folder, run/ folder and port.
PAGE_WORKERS = 3


def expected_work(page: Path) -> int:
    """A rough measure of how long a page's blocks take: its make commands, trainings and sleeps count most."""
    text = "\n".join(block.fence.text for block in blocks(page))
    return len(re.findall(r"\bmake \w", text)) + 2 * text.count("make train") + 2 * text.count("sleep")


def run_pages(todo: list[Path], workers: int = PAGE_WORKERS) -> tuple[ThreadPoolExecutor, dict[Path, Future]]:
    """Start running pages, `workers` at a time (the longest first, so that no long one starts last); each page's
    future PageResult. The caller shuts the pool down (waiting for what still runs)."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="docs-page")
    ordered = sorted(todo, key=lambda page: -expected_work(page))
    return pool, {page: pool.submit(run_page, page) for page in ordered}


# --- shapes: what must stay the same between the committed examples and a fresh run -------------------------------
VOLATILE = [
    (re.compile(r"make: \*\*\* \[[^\]]*\]"), "make: *** [recipe]"),
    (re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+"), "<token>"),
    (re.compile(r"\brk_(pub|sec)_[\w-]+"), "<key>"),
    (re.compile(r"\br1\.[\w-]+\.[\w-]+\.\d+\.[0-9a-f]{8}\b"), "<recommendation id>"),
    (re.compile(r"\b\d{8}T\d{6,9}Z-[0-9a-f]{6,}\b"), "<version>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<hex>"),
    (re.compile(r"-?\d[\d,]*(\.\d+)?(e-?\d+)?"), "0"),
]
# What changes on every run even when nothing else does: `make docs-examples` leaves an output alone when only these
# differ, so that regenerating touches only the examples that really changed.
EVERY_RUN = VOLATILE[1:7] + [
    (re.compile(r"\bpid \d+"), "pid <pid>"),
    (re.compile(r"\d+(\.\d+)? s\b"), "<seconds> s"),
    (re.compile(r'"(\w+_)?seconds": [\d.]+'), '"seconds": <seconds>'),
]
# Lines make echoes before running a recipe: they follow the Makefile, not the product.
ECHO = re.compile(r"^\.venv/bin/|^\S*/\.venv/bin/")


def json_values(text: str) -> list | None:
    """The JSON values a text consists of (one or several, separated by whitespace), or None if it is not that."""
    decoder, values, i = json.JSONDecoder(), [], 0
    text = text.strip()
    if not text or text[0] not in "[{":
        return None
    while i < len(text):
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return None
        values.append(value)
        while i < len(text) and text[i].isspace():
            i += 1
    return values


def json_shape(value: object) -> object:
    """Keys, list lengths and value types of a JSON value (numbers are one type; the values themselves are not)."""
    if isinstance(value, dict):
        return {k: json_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_shape(v) for v in value]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "string"


def text_shape(text: str) -> list[str]:
    """The words of a text output, sorted, with volatile values (tokens, versions, times, numbers) masked and make's
    echoes left out: the same words the same number of times. Sorted, because training prints the held-out model's
    progress from a second thread, so the order of those lines (and where they break) varies from run to run."""
    words = []
    for line in text.split("\n"):
        if ECHO.match(line):
            continue
        for pattern, mask in VOLATILE:
            line = pattern.sub(mask, line)
        words.extend(line.split())
    return sorted(words)


def shape(text: str) -> object:
    """What a fresh run must reproduce of an output."""
    values = json_values(text)
    return ("json", [json_shape(v) for v in values]) if values is not None else ("text", text_shape(text))


def same_but_for_run(one: str, other: str) -> bool:
    """Whether two outputs differ only in what differs on every run (tokens, versions, times, pids, durations)."""

    def masked(text: str) -> list[str]:
        for pattern, mask in EVERY_RUN:
            text = pattern.sub(mask, text)
        # The held-out model's progress lines come in either order, or even run into each other: words, sorted.
        return sorted(text.split())

    return masked(one) == masked(other)


def expected(block: Block) -> str | None:
    """The output committed for a block, or None when the page shows none."""
    if block.example is not None:
        return block.example.read_text() if block.example.exists() else ""
    if block.inline is not None:
        return block.inline.text + "\n"
    return None


def mismatches(result: PageResult) -> list[str]:
    """Every block whose fresh output differs in shape from the committed one."""
    problems = []
    for block, out in result.outputs:
        want = expected(block)
        if want is None or shape(want) == shape(out):
            continue
        where = name(block.example) if block.example else f"{name(block.page)}:{block.inline.line}"
        problems.append(
            f"{name(block.page)}:{block.fence.line}: the output no longer has the shape of "
            f"{where} (run `make docs-examples` if the change is intended).\ncommitted:\n{want}\nfresh:\n{out}"
        )
    return problems


def write(result: PageResult) -> list[Path]:
    """Rewrite the outputs a page shows with those of its fresh run; the files changed."""
    changed: list[Path] = []
    inline: list[tuple[Fence, str]] = []
    for block, out in result.outputs:
        if block.example is not None:
            if not block.example.exists() or not same_but_for_run(block.example.read_text(), out):
                block.example.parent.mkdir(parents=True, exist_ok=True)
                block.example.write_text(out)
                changed.append(block.example)
        elif block.inline is not None and not same_but_for_run(block.inline.text + "\n", out):
            inline.append((block.inline, out))
    if inline:
        lines = result.page.read_text().split("\n")
        for f, out in sorted(inline, key=lambda x: -x[0].line):  # bottom up: earlier line numbers stay right
            lines[f.line : f.end] = out.rstrip("\n").split("\n")
        result.page.write_text("\n".join(lines))
        changed.append(result.page)
    return changed


def main(argv: list[str] | None = None) -> int:
    """Check (or with --write, regenerate) the outputs of every page's runnable blocks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite docs/examples/*.txt and README's outputs")
    parser.add_argument("pages", nargs="*", type=Path, help="pages to run (default: README.md and docs/*.md)")
    args = parser.parse_args(argv)
    status = 0
    bad = [where for page in pages() for where in unmarked(page)]
    if bad:
        print("unmarked shell or Python blocks (add <!-- run --> or <!-- not run: reason --> above):", *bad, sep="\n  ")
        status = 1
    todo = [p.resolve() for p in args.pages] or pages()
    pool, running = run_pages(todo)
    for page in todo:
        result = running[page].result()
        if result.failure:
            print(result.failure)
            status = 1
            continue
        if args.write:
            for path in write(result):
                print(f"wrote {name(path)}")
        else:
            for problem in mismatches(result):
                print(problem)
                status = 1
        print(
            f"{name(page)}: {len(result.outputs)} block(s) ran in "
            f"{' + '.join(f'{t:.1f}' for t in result.seconds)} = {sum(result.seconds):.1f} s"
        )
    pool.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
