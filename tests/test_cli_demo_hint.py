"""Commands on the default store point at the demo shop's events when only the demo's own store has some."""

from pathlib import Path

import pytest

from recommender import cli
from recommender.core.settings import get_settings


def _demo_events(root: Path) -> None:
    segment = root / "demo" / "events" / "raw" / "date=2026-12-02" / "hour=11" / "w-1.jsonl"
    segment.parent.mkdir(parents=True)
    segment.write_text("")


def test_compaction_of_an_empty_store_names_the_demo_store(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(get_settings().storage_url)
    assert cli.main(["events-compact"]) == 0
    assert "demo" not in capsys.readouterr().out  # no demo store: no note
    _demo_events(root)
    assert cli.main(["events-compact"]) == 0
    assert f"STORAGE_URL={root / 'demo'} make events_compact" in capsys.readouterr().out


def test_training_from_no_events_names_the_demo_store(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(get_settings().storage_url)
    _demo_events(root)
    assert cli.main(["train", "events:"]) == 1
    err = capsys.readouterr().err
    assert "no events recorded yet" in err and f"STORAGE_URL={root / 'demo'} make train" in err
