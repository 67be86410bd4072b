"""Training from the recorded purchases (make train PATH_TO_DATA=events:), alone and with a file, from compacted
days and segments not compacted yet, on local disk and S3; and its one-line refusals."""

import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from recommender import cli
from recommender.core import registry
from recommender.core.items import ITEMS_FILE
from recommender.core.settings import get_settings
from recommender.core.storage import S3Storage, open_storage
from recommender.training.event_compaction import compact
from recommender.training.event_tables import split_sources, with_store
from recommender.training.pipeline import TrainingParams, train
from tests.conftest import BUCKET
from tests.training.event_fixtures import append, event, rid


def purchases(tiny_csv) -> list[dict]:
    """The tiny dataset's invoices as purchase events (cancellations and returns left out, as a shop records only
    what it sells), one session and event per invoice."""
    invoices: dict[str, list[dict]] = {}
    with open(tiny_csv, newline="") as f:
        for row in csv.DictReader(f):
            if not row["InvoiceNo"].startswith("C") and float(row["Quantity"]) > 0:
                invoices.setdefault(row["InvoiceNo"], []).append(row)
    records = []
    for number, rows in invoices.items():
        when = datetime.strptime(rows[0]["InvoiceDate"], "%Y-%m-%d %H:%M:%S").strftime("%Y-%m-%dT%H:%M:%SZ")
        items = [(r["StockCode"], int(r["Quantity"]), float(r["UnitPrice"])) for r in rows]
        records.append(
            event(
                f"c{number}",
                "purchase",
                when,
                session=f"s{number}",
                items=items,
                user=rows[0]["CustomerID"] or None,
                received=f"2026-12-0{1 + len(records) % 2}T10:00:00Z",  # two days: a few segments
            )
        )
    return records


def record(storage, tiny_csv) -> int:
    """The purchases recorded, the first half compacted, the rest still raw (and one sent twice); their count."""
    records = purchases(tiny_csv)
    half = len(records) // 2
    append(storage, records[:half])
    compact(storage, now=lambda: datetime(2030, 1, 1, tzinfo=UTC))
    append(storage, records[half:] + records[:1], name="writer-2")
    assert storage.list("events/raw/") and storage.list("events/parquet/")
    return len(records)


def test_train_events_through_the_cli_reads_parquet_and_raw_segments(tiny_csv, capsys):
    storage = open_storage(get_settings())
    baskets = record(storage, tiny_csv)
    assert cli.main(["train", "events:"]) == 0
    out = capsys.readouterr().out
    assert f"baskets: {baskets:,} (" in out, out
    assert "rows dropped: " in out and "holdout: the " in out and "activated " in out
    manifest = registry.read_manifest(storage, registry.active_version(storage))
    assert manifest["counts"]["baskets"] == baskets
    assert manifest["source"]["file"] == "events" and len(manifest["source"]["sha256"]) == 64
    assert manifest["period"]["first"].startswith("2010-12")


def test_train_from_a_file_and_events_together_with_descriptions_from_the_model(trained_storage, tiny_csv, capsys):
    record(trained_storage, tiny_csv)
    alone = registry.read_manifest(trained_storage, registry.active_version(trained_storage))["counts"]
    assert cli.main(["train", f"{tiny_csv},events:", "--force"]) == 0
    assert "reading " in capsys.readouterr().out
    version = registry.active_version(trained_storage)
    counts = registry.read_manifest(trained_storage, version)["counts"]
    assert counts["baskets"] == 2 * alone["baskets"] and counts["items"] == alone["items"]
    # events alone: descriptions come from the active model (the events carry none)
    assert cli.main(["train", "events:", "--force"]) == 0
    version = registry.active_version(trained_storage)
    items = json.loads(trained_storage.read(registry.artifact_key(version, ITEMS_FILE)))
    assert len(items["codes"]) == alone["items"] and all(items["descriptions"])


def test_train_events_from_s3(s3, tiny_csv, tmp_path, monkeypatch):
    storage = S3Storage(s3, BUCKET, "shop", cache_dir=str(tmp_path / "cache"))
    monkeypatch.setenv("STORAGE_URL", storage.url)
    get_settings.cache_clear()
    baskets = record(storage, tiny_csv)
    result = train("events:", storage, TrainingParams(holdout=None), progress=lambda _m: None)
    assert result.manifest["counts"]["baskets"] == baskets and result.activated


def test_no_events_and_no_purchases_are_one_line_each(capsys):
    assert cli.main(["train", "events:"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no events recorded yet in ") and "\n" not in err
    append(open_storage(get_settings()), [event("e1", "view", "2026-12-01T10:00:00Z", items=["A"], rec=rid())])
    assert cli.main(["train", "events:"]) == 1
    err = capsys.readouterr().err.strip()
    assert "error: no purchase events in " in err and "(events recorded: 1 view)" in err and "\n" not in err
    assert cli.main(["train", "events:", "--engine", "spark"]) == 1
    assert "leave out ENGINE=spark" in capsys.readouterr().err


def test_sources_split_only_around_the_event_log():
    assert split_sources("a,b.csv") == ["a,b.csv"]
    assert split_sources("orders.csv, events:") == ["orders.csv", "events:"]
    assert with_store("orders.csv,events:", "/x") == "orders.csv,events:/x"
    assert with_store("events:s3://b/p", "/x") == "events:s3://b/p"
    with pytest.raises(Exception, match="more than once"):
        split_sources("events:,events:")


@pytest.mark.slow
def test_the_light_install_compacts_reports_and_trains_without_pyarrow(tiny_csv, tmp_path):
    """DuckDB reads and writes the Parquet log itself: pyarrow (an extra) is never needed."""
    storage = open_storage(get_settings())
    record(storage, tiny_csv)
    code = (
        "import sys; sys.modules['pyarrow'] = None; from recommender import cli; "
        "sys.exit(cli.main(['events-report']) or cli.main(['train', 'events:']))"
    )
    env = {**os.environ, "STORAGE_URL": storage.url}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "activated " in done.stdout and "(none)" in done.stdout
