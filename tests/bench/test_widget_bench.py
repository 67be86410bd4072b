"""The widget part of the benchmark, smoke-run: one first visit and one next page of the demo shop."""

from pathlib import Path

import pytest

from bench import options, widget

pytestmark = pytest.mark.slow


def test_widget_part_measures_the_first_paint():
    if not Path(widget.CHROMIUM).exists():
        pytest.fail(f"{widget.CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run installs it)")
    result = widget.bench_widget(options.Options.quick_options(widget_loads=1))
    paints = [r.value for r in result.rows]
    assert len(paints) == 3 and all(0 < p < 10_000 for p in paints)
    assert result.rows[1].target == "<= 300 ms" and result.details["loads"] == 1
