"""Cold-start benchmark: a fresh process imports the recommend Lambda handler and answers its first event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import RESULT_MARK, median
from bench.deployment import Deployment
from bench.options import Options
from bench.report import PartResult, Row, target_row
from recommender.core.errors import ConfigError
from recommender.local.template import Tagged, read_template

# ---------------------------------------------------------------------------------------------------------
# 3. Cold start of the recommend Lambda handler.
# ---------------------------------------------------------------------------------------------------------
COLD_START = r"""
import json, sys, time
started = time.monotonic()
# The function's CodeUri and the layer, in the order the Lambda runtime puts them on sys.path (/var/task, /opt/python)
sys.path[:0] = [sys.argv[1], sys.argv[3]]
for name in sys.argv[4].split(","):  # installed here (moto needs it) but not in the layer: import fails as on Lambda
    sys.modules[name] = None
import app  # functions/recommend/app.py: Handler app.handler
imported = time.monotonic()
from recommender.serving import web
from recommender.core.settings import get_settings
web.model_holder(get_settings()).refresh()  # what the first request would do: load and verify the model
loaded = time.monotonic()
from types import SimpleNamespace
context = SimpleNamespace(function_name="recommend", aws_request_id="bench", get_remaining_time_in_millis=lambda: 30000)
response = app.handler(json.loads(sys.argv[2]), context)
answered = time.monotonic()
print("BENCH_RESULT " + json.dumps({"started": started, "imported": imported, "loaded": loaded, "answered": answered,
                                    "status": response["statusCode"], "body": response["body"][:300],
                                    "package": __import__("recommender").__file__}))
"""
# Packages of this environment that the layer does not ship (tests/test_template.py: OPTIONAL): PyJWT imports
# cryptography when it is installed (for RSA and EC keys, never used here), and needs none for HMAC, as on Lambda.
NOT_IN_LAYER = ("cryptography",)


def function_environment(template: Path, function: str = "RecommendFunction") -> dict[str, str]:
    """The plain values of the function's environment in template.yaml (Globals, then its own), e.g.
    OPENBLAS_NUM_THREADS; values computed by CloudFormation (!Ref, !Sub, !If) are left out."""
    doc = read_template(template)
    env: dict[str, str] = {}
    for scope in (doc.get("Globals", {}).get("Function", {}), doc["Resources"][function]["Properties"]):
        variables = (scope.get("Environment") or {}).get("Variables") or {}
        env.update({k: str(v) for k, v in variables.items() if not isinstance(v, Tagged)})
    return env


def build_layer(root: Path, target: Path) -> Path:
    """The layer's package part as `sam build` makes it (shared/Makefile: layer-source, then bytecode) in target;
    its dependencies are this environment's, already compiled by pip."""
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(root / "shared"), "layer-source", f"TARGET={target}"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-f", "--invalidation-mode", "unchecked-hash", str(target)],
        check=True,
        capture_output=True,
    )
    return target


def send_data_event(template_dir: Path, token: str, basket: Sequence[str], n: int = 10) -> dict:
    """An API Gateway HTTP API (payload 2.0) event for POST /send_data, shaped as tests/events/send_data.json."""
    sample = template_dir / "tests" / "events" / "send_data.json"
    if sample.exists():
        event = json.loads(sample.read_text())
    else:  # an installed package without the repository's tests: the same shape, minimal
        event = {
            "version": "2.0",
            "routeKey": "POST /send_data",
            "rawPath": "/send_data",
            "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "isBase64Encoded": False,
            "requestContext": {
                "http": {
                    "method": "POST",
                    "path": "/send_data",
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": "bench",
                },
                "requestId": "bench",
                "routeKey": "POST /send_data",
                "stage": "$default",
            },
        }
    event["headers"]["authorization"] = f"Bearer {token}"
    event["body"] = json.dumps({"product_list": list(basket), "n": n})
    return event


def parse_importtime(stderr: str, top: int = 12) -> dict:
    """The slowest imports from `python -X importtime`: per top-level package (self times of all its modules
    summed, so that fastapi is charged for fastapi and pydantic for pydantic), and single modules by self time."""
    entries = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        try:
            parts = line.split("|")
            self_us = int(parts[0].split(":")[1])
            cumulative_us = int(parts[1])
            raw = parts[2]
        except (ValueError, IndexError):
            continue
        depth = (len(raw) - len(raw.lstrip(" ")) - 1) // 2
        entries.append(
            {"module": raw.strip(), "self_ms": self_us / 1000, "cumulative_ms": cumulative_us / 1000, "depth": depth}
        )
    packages: dict[str, dict] = {}
    for e in entries:
        name = e["module"].split(".")[0]
        package = packages.setdefault(name, {"package": name, "self_ms": 0.0, "modules": 0})
        package["self_ms"] += e["self_ms"]
        package["modules"] += 1
    by_package = sorted(packages.values(), key=lambda p: -p["self_ms"])[:top]
    by_self = sorted(entries, key=lambda e: -e["self_ms"])[:top]
    return {
        "by_package": by_package,
        "by_self": by_self,
        "modules": len(entries),
        "total_ms": sum(e["cumulative_ms"] for e in entries if e["depth"] == 0),
    }


def bench_cold(options: Options, dep: Deployment) -> PartResult:
    """Part 3: a fresh process imports the recommend handler, loads the model and answers one event via Mangum."""
    root = options.template.resolve().parent
    code_dir = root / "functions" / "recommend"
    event = json.dumps(send_data_event(root, dep.token, dep.baskets[0]))
    # The function's own folder is read-only on Lambda and `sam build` ships no bytecode for it: app.py is compiled
    # at every cold start there, and here too.
    env = {
        **os.environ,
        **function_environment(options.template),
        "STORAGE_URL": str(dep.folder),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    layer = build_layer(root, dep.folder.parent / "layer")
    argv = [sys.executable, "-c", COLD_START, str(code_dir), event, str(layer), ",".join(NOT_IN_LAYER)]
    runs = []
    for _ in range(options.cold_repeats):
        spawned = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_MARK)), None)
        if line is None:
            raise ConfigError(f"the cold-start process failed: {done.stderr.strip()[-800:]}")
        r = json.loads(line[len(RESULT_MARK) :])
        if r["status"] != 200:
            raise ConfigError(f"the cold-start event was answered {r['status']}: {r['body']}")
        if not r["package"].startswith(str(layer)):
            raise ConfigError(f"the cold-start process imported the package from {r['package']}, not the layer")
        runs.append(
            {
                "interpreter": r["started"] - spawned,
                "import": r["imported"] - r["started"],
                "model_load": r["loaded"] - r["imported"],
                "first_event": r["answered"] - r["loaded"],
                "total": r["answered"] - spawned,
            }
        )
    importtime = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], capture_output=True, text=True, env=env, timeout=120
    )
    imports = parse_importtime(importtime.stderr)
    stat = {k: median([r[k] for r in runs]) for k in runs[0]}
    slowest = ", ".join(f"{p['package']} {p['self_ms']:.0f} ms" for p in imports["by_package"][:4])
    rows = [
        target_row(
            "cold",
            f"cold start, spawn to first answer (median of {len(runs)})",
            "cold_start_seconds",
            round(stat["total"], 3),
            "s",
            f"slowest imports: {slowest}",
        ),
        Row("cold", "  interpreter start", round(stat["interpreter"] * 1000), "ms"),
        Row("cold", "  import handler module", round(stat["import"] * 1000), "ms"),
        Row("cold", "  model load (verify + map)", round(stat["model_load"] * 1000), "ms"),
        Row("cold", "  first event through Mangum", round(stat["first_event"] * 1000), "ms"),
    ]
    md = [
        "## Cold start",
        "",
        "A fresh `python` puts `functions/recommend` and the layer's package (shared/Makefile's layer-source, "
        "compiled to bytecode as `build-SharedLayer` does) on sys.path and imports `app` as the Lambda runtime "
        "does, with the function's plain environment variables of template.yaml (OPENBLAS_NUM_THREADS=1), no "
        "bytecode written for app.py (Lambda's /var/task is read-only) and no cryptography (the layer has none; "
        "PyJWT would import it if it were there). It loads the active Online Retail model "
        "(checksums verified, arrays memory-mapped) and answers one API Gateway v2 `POST /send_data` event through "
        "Mangum (token check, user lookup, recommendation). Local storage: on AWS the model would first be copied "
        "from S3 to /tmp, and the secret read from Secrets Manager.",
        "",
        f"Slowest imports (`python -X importtime`, one extra run; {imports['modules']} modules, "
        f"{imports['total_ms']:.0f} ms in all), per package:",
        "",
        "| package | ms (self times of its modules) | modules |",
        "|---|---|---|",
    ]
    md += [f"| {p['package']} | {p['self_ms']:.0f} | {p['modules']} |" for p in imports["by_package"]]
    md += ["", "Slowest single modules (self time):", "", "| module | self ms |", "|---|---|"]
    md += [f"| {e['module']} | {e['self_ms']:.1f} |" for e in imports["by_self"][:8]]
    details = {"runs": runs, "median": stat, "imports": imports, "model_version": dep.version}
    return PartResult("cold", rows, details, "", 0, [], [], options.quick, "\n".join(md))
