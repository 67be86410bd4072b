"""Property-based tests of the whole HTTP API from its own OpenAPI schema (schemathesis), against the real local server.

`make fuzz` runs it long; `make test` runs it for a few tens of seconds (tests/local/test_fuzz.py). A run trains the
tiny synthetic dataset into a temporary storage, adds a user, starts the server as `make run-prod` does, logs in,
and lets schemathesis generate requests for every operation of /openapi.json, valid and invalid, with the bearer
token, checking every answer: no 5xx, the status and the body as the schema documents them, the content type and
headers, invalid data refused, unknown methods answered 405 with Allow, no dropped connection.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from recommender.core.errors import ConfigError
from recommender.core.settings import Settings

# Checks that judge the API (conformance, 5xx, input validation, methods, auth), all of schemathesis's but those
# about stateful links, which this API does not declare.
EXCLUDED_CHECKS = ("use_after_free", "ensure_resource_availability")
# schemathesis's default statuses, plus 413: a body over MAX_BODY_BYTES is refused whatever it holds (a valid list of
# 1,000 long codes is larger), and the schema documents it. Cross-field rules no JSON Schema states
# (price_min <= price_max) are refused with 422 on the recommendation routes, even for schema-valid requests.
# POST /events checks each event on its own: a batch holding events that break the schema is answered 200, each of
# them "refused" with its reason (the response schema is still checked), and a batch over EVENTS_MAX_BATCH is a 422.
# The console's rules and feed routes check what no JSON Schema states (a rules document's keys and codes, a feed
# file's name, type and rows), and answer 422 naming the problem for schema-valid bodies that break them.
CONFIG = """\
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "413", "429", "5xx"]

[[operations]]
include-path-regex = "^/(send_data|recommendations)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "413", "422", "429", "5xx"]

[[operations]]
include-path-regex = "^/(rules|rules/check|rules/preview|feed|feed/preview)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "413", "422", "429", "5xx"]

[[operations]]
include-path-regex = "^/events$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "413", "422", "429", "5xx"]
checks.negative_data_rejection.expected-statuses = ["200", "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
"""
USER = "fuzzer"


@dataclass
class FuzzResult:
    """What a run found: schemathesis's own summary, and what the server logged."""

    seconds: float
    exit_code: int
    operations: int
    test_cases: int
    failures: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)  # tracebacks and 5xx logged by the server
    output: str = ""
    seed: int | None = None

    @property
    def ok(self) -> bool:
        """No failure, no error, nothing the server logged as unexpected."""
        return self.exit_code == 0 and not self.failures and not self.errors and not self.server_errors

    def summary(self) -> dict:
        """JSON-ready figures (no output)."""
        return {
            "seconds": round(self.seconds, 1),
            "exit_code": self.exit_code,
            "operations": self.operations,
            "test_cases": self.test_cases,
            "failures": self.failures,
            "errors": self.errors,
            "server_errors": self.server_errors[:20],
            "seed": self.seed,
            "ok": self.ok,
            "checks": "all but " + ", ".join(EXCLUDED_CHECKS),
        }


def _login(base: str, password: str) -> str:
    body = urllib.parse.urlencode({"username": USER, "password": password}).encode()
    with urllib.request.urlopen(urllib.request.Request(base + "/token", data=body), timeout=30) as response:
        return json.loads(response.read())["access_token"]


def merchandise(storage: object, version: str) -> None:
    """A product feed (prices, categories, brands, availability) and rules of every kind, active as `make feed`
    and `make rules` would leave them, so that the request options meet real data."""
    from bench.merch import synthetic_merchandising
    from recommender.core import registry
    from recommender.core.feed_and_rules import FEED_FILE, RULES_FILE
    from recommender.serving.model import load_model
    from recommender.training.feed import FeedFile
    from recommender.training.rules import validate

    model = load_model(storage, version)
    feed, rules = synthetic_merchandising(model.items, model.item_price)
    # Fewer rules than the benchmark's 1,000 on a model of a few dozen items: some of each kind.
    rules = {
        "block": {**rules["block"], "codes": rules["block"]["codes"][:3]},
        "do_not_pair": rules["do_not_pair"][:5],
        "pin": [p for p in rules["pin"] if p["item"]["code"][0] not in rules["block"]["codes"][:3]][:5],
        "boost": rules["boost"][:5],
    }
    for kind, files in (
        (registry.FEED, {FEED_FILE: FeedFile(feed["items"], 0, []).to_json()}),
        (registry.RULES, {RULES_FILE: json.dumps(validate(rules)).encode()}),
    ):
        registry.activate(storage, registry.publish_files(storage, files, {}, kind)["version"], kind=kind)


def fuzz(
    seconds: float,
    template: Path,
    workdir: Path | None = None,
    seed: int | None = None,
    settings: Settings | None = None,
) -> FuzzResult:
    """Fuzz a freshly started local server for `seconds` (schemathesis's time budget); stops the server after."""
    from bench.common import environment
    from bench.deployment import free_port
    from recommender.core.storage import LocalStorage
    from recommender.local.server import start, stop
    from recommender.serving.users import add_user
    from recommender.tools import synthetic
    from recommender.training.pipeline import train

    owned = workdir is None
    work = Path(tempfile.mkdtemp(prefix="recommender-fuzz-")) if owned else workdir
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    storage = LocalStorage(data)
    data_file = work / "tiny.csv"
    synthetic.write_csv(synthetic.TINY, data_file)
    version = train(data_file, storage, progress=lambda _m: None).version
    merchandise(storage, version)
    password = secrets.token_urlsafe(16)
    add_user(storage, USER, password, "Fuzz Tester", "fuzz@example.com", rounds=4)
    settings = replace(
        settings or Settings(), storage_url=str(data), run_dir=str(work / "run"), host="127.0.0.1", port=free_port()
    )
    with environment(BCRYPT_ROUNDS="4", JWT_SECRET=None):
        info = start(settings, template)
    base = f"http://{info.host}:{info.port}"
    config = work / "schemathesis.toml"
    config.write_text(CONFIG)
    report = work / "report.json"
    try:
        token = _login(base, password)
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            ",".join(EXCLUDED_CHECKS),
            "--header",
            f"Authorization: Bearer {token}",
            "--max-time",
            str(max(1, round(seconds))),
            "--request-timeout",
            "30",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            *(["--seed", str(seed)] if seed is not None else []),
        ]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 300, cwd=work)
        took = time.monotonic() - started
    finally:
        stop(settings)
    log = Path(info.log_file).read_text(errors="replace") if Path(info.log_file).exists() else ""
    server_errors = [
        line for line in log.splitlines() if re.search(r"Traceback|Exception in ASGI|unexpected error", line)
    ]
    if not report.exists():
        raise ConfigError(
            f"schemathesis did not run (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}"
        )
    raw = json.loads(report.read_text())
    result = FuzzResult(
        took,
        done.returncode,
        raw["operations"]["tested"],
        raw["test_cases"]["generated"],
        raw.get("failures") or [],
        raw.get("errors") or [],
        server_errors,
        done.stdout + done.stderr,
        raw.get("seed"),
    )
    if owned and result.ok:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return result
