"""The whole HTTP API fuzzed from its own OpenAPI schema (schemathesis, every check), authenticated, against the real
local server over loopback: a bounded run here, `make fuzz` for a long one."""

import pytest

from bench.fuzz import fuzz
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SECONDS = 25  # schemathesis's time budget; a fixed seed, so that a run here never fails by chance (make fuzz: random)


def test_fuzz_finds_nothing(tmp_path):
    result = fuzz(SECONDS, ROOT / "template.yaml", workdir=tmp_path, seed=1)
    detail = f"{result.summary()}\n{result.output[-6000:]}"
    assert result.operations >= 8 and result.test_cases > 50, detail
    assert result.ok, detail
