"""Build the Lambda artifacts without Docker (make build-lambda-pip), laid out as `sam build` lays them out.

Lambda's python3.11 runtime is Amazon Linux 2 on x86_64 (glibc 2.26). Every serving dependency except annoy has
manylinux2014 wheels (glibc 2.17), so pip fetches those for that platform whatever this machine is. annoy has no
wheels at all and compiles from source; a compiler of a current Linux links it against a newer glibc and
libstdc++ than Amazon Linux 2 has, and the import then fails on AWS ("GLIBC_2.34 not found"). So annoy is, in
order of preference:
  1. a wheel you give (--annoy-wheel), e.g. one built once with `sam build --use-container` or in CI;
  2. compiled here with Zig's C++ compiler (the `ziglang` package from PyPI, installed on demand under
     .aws-sam/tools) for glibc 2.17 with its C++ library linked in: a manylinux2014-compatible module from any
     Linux x86_64 machine with CPython 3.11 (it needs this interpreter's headers);
  3. compiled here with the system compiler (--compiler system): only right on a machine as old as Amazon Linux 2.
Whatever the source, every compiled module in the layer is checked against Amazon Linux 2's glibc and
libstdc++ symbol versions, and the layer is imported by a clean interpreter that answers requests from a model
trained with this project's own annoy; only then does the build replace .aws-sam/build, which `make deploy`
deploys. The layer is also written as a zip (.aws-sam/recommender-layer.zip) for other deployment tools.

Usage: python infra/build_lambda.py [--annoy-wheel FILE] [--compiler zig|system] [--no-check]
       python infra/build_lambda.py --check-build     (check what `sam build` left in .aws-sam/build)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from recommender.local.template import dump_template, read_template, resolved

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
OUT = ROOT / ".aws-sam"
BUILD = OUT / "build"
TOOLS = OUT / "tools"
LAYER_ZIP = OUT / "recommender-layer.zip"

RUNTIME = "python3.11"
PYTHON_VERSION = "3.11"
# manylinux2014 is glibc 2.17; Amazon Linux 2 (glibc 2.26) also runs the later tags up to 2.26.
PLATFORMS = [
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_26_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
# What Amazon Linux 2 provides: glibc 2.26, libstdc++ of GCC 7 (GLIBCXX_3.4.24, CXXABI_1.3.11).
MAX_SYMBOL_VERSIONS = {"GLIBC": (2, 26), "GLIBCXX": (3, 4, 24), "CXXABI": (1, 3, 11)}
# annoy's setup.py adds -march=native, which ties the module to this machine's CPU. Lambda's x86_64 CPUs all have
# AVX2 (Haswell level); -ffast-math is left out: clang miscompiles annoy's searches with it (a segfault).
ANNOY_COMPILER_ARGS = [
    "-D_CRT_SECURE_NO_WARNINGS",
    "-fpermissive",
    "-march=haswell",
    "-O2",
    "-DANNOYLIB_MULTITHREADED_BUILD",
    "-std=c++14",
]
ZIG_TARGET = "x86_64-linux-gnu.2.17"
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


class BuildError(Exception):
    """A build step failed; the message says what to do."""


# --- the template (read and written by recommender.local.template, its CloudFormation tags kept) ---------------


def built_template(template: dict) -> dict:
    """The template `sam deploy` needs after a build: code locations pointing at the build folders."""
    resources = template["Resources"]
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            props["CodeUri"] = name
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = name
            resource.pop("Metadata", None)  # already built: sam must not build it again
    return template


# --- steps --------------------------------------------------------------------------------------------------


def run(command: list[str], **kwargs) -> None:
    """Run a command, echoing it; BuildError if it fails."""
    print("+", " ".join(command), flush=True)
    result = subprocess.run(command, **kwargs)
    if result.returncode != 0:
        raise BuildError(f"command failed (exit {result.returncode}): {' '.join(command[:4])} ...")


def serving_requirements() -> list[str]:
    """shared/requirements.txt without comments."""
    lines = (ROOT / "shared" / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def requirement_name(requirement: str) -> str:
    """The project name of a requirement line, normalized."""
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def install_wheels(requirements: list[str], target: Path) -> None:
    """Install the manylinux wheels of requirements (and their dependencies) for Lambda into target."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--target",
            str(target),
            *platforms,
            "--implementation",
            "cp",
            "--python-version",
            PYTHON_VERSION,
            "--only-binary=:all:",
            "--upgrade",
            *requirements,
        ]
    )


def can_compile_here() -> bool:
    """Whether a module compiled here fits the runtime: Linux x86_64 and CPython 3.11 (its headers are used)."""
    return (
        sys.platform.startswith("linux")
        and platform.machine() == "x86_64"
        and platform.python_implementation() == "CPython"
        and sys.version_info[:2] == (3, 11)
    )


def zig_compiler(workdir: Path) -> Path:
    """A C++ compiler command for glibc 2.17 with Zig (installed from PyPI under .aws-sam/tools when missing)."""
    if not (TOOLS / "ziglang").is_dir():
        run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(TOOLS), "ziglang"])
    wrapper = workdir / "zig-c++"
    wrapper.write_text(
        f'#!/bin/sh\nexec env PYTHONPATH="{TOOLS}" "{sys.executable}" -m ziglang c++ '
        f'-target {ZIG_TARGET} -fno-sanitize=all "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def build_annoy(requirement: str, compiler: str, workdir: Path) -> Path:
    """Compile annoy into a wheel for the runtime (see the module docstring); the wheel's path."""
    if not can_compile_here():
        raise BuildError(
            f"annoy has no wheels and must be compiled for Linux x86_64 with CPython 3.11, but this is "
            f"{platform.system()} {platform.machine()} with Python {platform.python_version()}: use "
            "`make build-lambda` (sam build --use-container), or give an annoy wheel: "
            "make build-lambda-pip ANNOY_WHEEL=path/to/annoy-...-cp311-cp311-linux_x86_64.whl"
        )
    env = {**os.environ, "ANNOY_COMPILER_ARGS": ",".join(ANNOY_COMPILER_ARGS)}
    if compiler == "zig":
        cxx = str(zig_compiler(workdir))
        env.update(CC=cxx, CXX=cxx, LDSHARED=f"{cxx} -shared")
    wheels = workdir / "annoy-wheel"
    # --no-cache-dir: pip's wheel cache may hold annoy as `make devel` built it (-march=native, local glibc).
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-cache-dir",
            "--no-deps",
            "--no-binary",
            "annoy",
            "--wheel-dir",
            str(wheels),
            requirement,
        ],
        env=env,
    )
    return next(wheels.glob("annoy-*.whl"))


def symbol_versions(library: Path) -> dict[str, tuple[int, ...]]:
    """The newest GLIBC, GLIBCXX and CXXABI symbol version a compiled module needs (read from its string table)."""
    newest: dict[str, tuple[int, ...]] = {}
    for match in re.finditer(rb"\b(GLIBCXX|GLIBC|CXXABI)_(\d+(?:\.\d+)+)\b", library.read_bytes()):
        name, version = match.group(1).decode(), tuple(int(x) for x in match.group(2).split(b"."))
        newest[name] = max(newest.get(name, ()), version)
    return newest


def check_compiled_modules(layer: Path) -> list[str]:
    """Every compiled module in the layer that needs a newer glibc or libstdc++ than Amazon Linux 2 has."""
    problems = []
    for library in sorted(layer.rglob("*.so*")):
        for name, version in symbol_versions(library).items():
            if version > MAX_SYMBOL_VERSIONS[name]:
                have = ".".join(map(str, MAX_SYMBOL_VERSIONS[name]))
                problems.append(
                    f"{library.relative_to(layer)} needs {name}_{'.'.join(map(str, version))} "
                    f"(Amazon Linux 2 has {name}_{have})"
                )
    return problems


def tree_size(folder: Path) -> int:
    """Total bytes of the files under folder."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_zip(folder: Path, target: Path) -> None:
    """Zip folder's content (files in sorted order, with the layer's bytecode) to target."""
    target.unlink(missing_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())


def layer_source(shared: Path, target: Path) -> None:
    """The serving part of the package into target, by the same make target sam build uses (one definition)."""
    run(
        ["make", "--no-print-directory", "-C", str(shared), "layer-source", f"TARGET={target}"],
        stdout=subprocess.DEVNULL,
    )


def copy_source(source: Path, target: Path) -> None:
    """Copy a source folder without caches and egg-info."""
    shutil.copytree(
        source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"), dirs_exist_ok=True
    )


# --- the smoke test: the layer imported by a clean interpreter answers real requests ---------------------------

SMOKE = r"""
import json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
started = time.perf_counter()
import app
imported = time.perf_counter() - started

def event(method, path, body=None, headers=None, content_type="application/json"):
    headers = {"host": "smoke.local", **({"content-type": content_type} if body else {}), **(headers or {})}
    return {"version": "2.0", "routeKey": f"{method} {path}", "rawPath": path, "rawQueryString": "",
            "headers": headers, **({"body": body} if body else {}), "isBase64Encoded": False,
            "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                        "sourceIp": "127.0.0.1", "userAgent": "smoke"},
                               "requestId": "smoke", "routeKey": f"{method} {path}", "stage": "$default"}}

context = type("Context", (), {"function_name": "smoke", "aws_request_id": "1",
                               "get_remaining_time_in_millis": lambda self: 30000})()
calls = json.loads(sys.argv[3])
answers = []
for method, path, body, headers, content_type in calls:
    response = app.handler(event(method, path, body, headers, content_type), context)
    json_body = response["headers"].get("content-type", "").startswith("application/json")
    answers.append({"status": response["statusCode"], "csp": response["headers"].get("content-security-policy"),
                    "body": json.loads(response["body"]) if json_body else response["body"]})
forbidden = [m for m in ("pandas", "scipy", "uvicorn") if m in sys.modules]
print(json.dumps({"answers": answers, "forbidden": forbidden, "import_seconds": imported}))
"""


def smoke_test(layer: Path, functions: dict[str, Path], workdir: Path) -> None:
    """Train a tiny model with this project's own install, then let each function answer from the layer alone."""
    sys.path.insert(0, str(ROOT / "shared"))
    from recommender.core.storage import LocalStorage
    from recommender.serving.model import load_model
    from recommender.serving.tokens import issue_token
    from recommender.serving.users import add_user
    from recommender.tools import synthetic
    from recommender.training.pipeline import train

    data, store = workdir / "tiny.csv", workdir / "store"
    synthetic.write_csv(synthetic.TINY, data)
    storage = LocalStorage(store)
    version = train(data, storage, progress=lambda _m: None).version
    smoke = add_user(storage, "smoke", "smoke password", rounds=4)
    model = load_model(storage, version)
    code = model.items.codes[model.items.most_popular()[0]]
    expected = [s.item.stock_code for s in model.recommend([code], 5).items]
    secret = "s" * 48
    token = issue_token("smoke", secret, stamp=smoke.stamp)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "STORAGE_URL": str(store),
        "JWT_SECRET": secret,
        "CACHE_DIR": str(workdir / "cache"),
        "BCRYPT_ROUNDS": "4",
    }
    basket = json.dumps({"product_list": [code], "n": 5})
    plans = {
        "auth": [
            ["POST", "/token", "username=smoke&password=smoke+password", None, "application/x-www-form-urlencoded"]
        ],
        "recommend": [
            ["GET", "/health", None, None, None],
            ["POST", "/send_data", basket, {"authorization": f"Bearer {token}"}, "application/json"],
            ["GET", "/", None, None, None],
        ],  # the console's page: package data in the layer
    }
    for name, calls in plans.items():
        folder = next(path for logical, path in functions.items() if name in logical.lower())
        # -I -S: no site-packages, no environment paths; only the standard library, the layer and the function.
        result = subprocess.run(
            [sys.executable, "-I", "-S", "-c", SMOKE, str(layer), str(folder), json.dumps(calls)],
            capture_output=True,
            text=True,
            env=env,
            cwd=workdir,
            timeout=120,
        )
        if result.returncode != 0:
            raise BuildError(f"the {name} function cannot run from the built layer:\n{result.stderr[-2000:]}")
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        statuses = [a["status"] for a in outcome["answers"]]
        if statuses != [200] * len(calls) or outcome["forbidden"]:
            raise BuildError(
                f"the {name} function from the built layer answered {statuses}, "
                f"imported {outcome['forbidden']}: {outcome['answers']}"
            )
        if name == "recommend":
            got = [row[0] for row in outcome["answers"][1]["body"]["result"]["recommendation"]]
            if got != expected:
                raise BuildError(f"the built layer recommends {got} where this install recommends {expected}")
            page = outcome["answers"][2]
            if "<title>" not in page["body"] or "script-src 'self'" not in (page["csp"] or ""):
                raise BuildError("the built layer does not serve the web console (serving/static/ missing?)")
        print(
            f"smoke test: {name} function answered {statuses} from the layer alone "
            f"(import {outcome['import_seconds']:.2f} s)"
        )


# --- main ---------------------------------------------------------------------------------------------------


def build(annoy_wheel: Path | None, compiler: str, check: bool) -> None:
    """Build .aws-sam/build (functions, layer, template) and .aws-sam/recommender-layer.zip."""
    template = read_template(TEMPLATE)
    resources = template["Resources"]
    layers = {n: r for n, r in resources.items() if r["Type"] == "AWS::Serverless::LayerVersion"}
    functions = {n: r for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    if len(layers) != 1:
        raise BuildError(f"expected one layer in {TEMPLATE.name}, found {sorted(layers)}")
    ((layer_name, layer),) = layers.items()
    if layer.get("Metadata", {}).get("BuildMethod") != "makefile" or resolved(
        template, layer["Properties"]["CompatibleRuntimes"]
    ) != [RUNTIME]:
        raise BuildError(
            f"{layer_name} must be built by shared/Makefile for {RUNTIME} (Metadata: BuildMethod makefile); "
            "with RecommendSnapStart (python3.12) build with `make build-lambda SNAPSTART=1` instead"
        )
    OUT.mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="build.", dir=OUT))
    work = Path(tempfile.mkdtemp(prefix="work.", dir=OUT))
    try:
        layer_dir = staging / layer_name / "python"
        layer_source(ROOT / layer["Properties"]["ContentUri"], layer_dir)
        requirements = serving_requirements()
        annoy = [r for r in requirements if requirement_name(r) == "annoy"]
        install_wheels([r for r in requirements if requirement_name(r) != "annoy"], layer_dir)
        if annoy_wheel is None:
            annoy_wheel = build_annoy(annoy[0] if annoy else "annoy", compiler, work)
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(layer_dir),
                str(annoy_wheel),
            ]
        )
        # As shared/Makefile's build-SharedLayer: bytecode that a read-only layer uses whatever the zip's timestamps.
        run(
            [
                sys.executable,
                "-m",
                "compileall",
                "-q",
                "-f",
                "-j",
                "0",
                "--invalidation-mode",
                "unchecked-hash",
                str(layer_dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        for name, function in functions.items():
            copy_source(ROOT / function["Properties"]["CodeUri"], staging / name)
        problems = check_compiled_modules(layer_dir)
        if problems:
            raise BuildError(
                "the layer would not load on Lambda's python3.11 runtime (Amazon Linux 2):\n  "
                + "\n  ".join(problems)
                + "\nbuild annoy with --compiler zig (the default), give --annoy-wheel, or use "
                "`make build-lambda` (sam build --use-container)"
            )
        size = tree_size(staging)
        if size > LAMBDA_UNZIPPED_LIMIT:
            raise BuildError(f"the build is {size / 2**20:.0f} MB unzipped; Lambda allows 250 MB")
        if check:
            if can_compile_here():
                smoke_test(layer_dir, {n: staging / n for n in functions}, work)
            else:
                print("smoke test skipped: the layer's modules are for Linux x86_64 CPython 3.11, not this machine")
        (staging / "template.yaml").write_text(dump_template(built_template(template)))
        write_zip(staging / layer_name, LAYER_ZIP)
        shutil.rmtree(BUILD, ignore_errors=True)
        staging.rename(BUILD)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"built {BUILD.relative_to(ROOT)} ({size / 2**20:.0f} MB unzipped; layer zip "
        f"{LAYER_ZIP.relative_to(ROOT)}, {LAYER_ZIP.stat().st_size / 2**20:.0f} MB); deploy it with `make deploy`"
    )


def check_build(check: bool) -> None:
    """Check an existing .aws-sam/build (e.g. from sam build): glibc and libstdc++ needs, then the smoke test."""
    if not (BUILD / "template.yaml").is_file():
        raise BuildError("nothing built yet: make build-lambda or make build-lambda-pip")
    resources = read_template(TEMPLATE)["Resources"]
    (layer_name,) = [n for n, r in resources.items() if r["Type"] == "AWS::Serverless::LayerVersion"]
    functions = [n for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]
    problems = check_compiled_modules(BUILD / layer_name / "python")
    if problems:
        raise BuildError(
            "the built layer would not load on Lambda's python3.11 runtime (Amazon Linux 2):\n  "
            + "\n  ".join(problems)
            + "\nwas it built without --use-container?"
        )
    if check and can_compile_here():
        work = Path(tempfile.mkdtemp(prefix="work.", dir=OUT))
        try:
            smoke_test(BUILD / layer_name / "python", {n: BUILD / n for n in functions}, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{BUILD.relative_to(ROOT)}: every compiled module loads on Amazon Linux 2")


def main(argv: list[str] | None = None) -> int:
    """Command line: build, or print one line saying why not."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--annoy-wheel", type=Path, help="use this annoy wheel (cp311, Linux x86_64) instead of compiling"
    )
    parser.add_argument(
        "--compiler",
        choices=["zig", "system"],
        default="zig",
        help="how to compile annoy when no wheel is given (default: zig, for glibc 2.17)",
    )
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the smoke test of the built layer")
    parser.add_argument(
        "--check-build",
        action="store_true",
        help="build nothing: check the existing .aws-sam/build (what make build-lambda does after sam build)",
    )
    args = parser.parse_args(argv)
    if args.annoy_wheel is not None and not args.annoy_wheel.is_file():
        print(f"error: no such file: {args.annoy_wheel}", file=sys.stderr)
        return 2
    try:
        if args.check_build:
            check_build(args.check)
        else:
            build(args.annoy_wheel.resolve() if args.annoy_wheel else None, args.compiler, args.check)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
