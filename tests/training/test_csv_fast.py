"""The csv read started before training's imports (training/csv_fast.py) and the faster "latest value per item":
the same cleaned baskets as the reader alone, and as pandas' reader, on every kind of csv."""

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.core.errors import DataFileError
from recommender.training import cleaning, csv_fast, ingest, prefetch
from recommender.training.ingest import NO_TIME, _latest_per_item, load_transactions

from .test_ingest import HEADER, ROWS

QUOTED = [
    *ROWS,
    ["536368", "22960", '"JAM MAKING SET, PRINTED"', "6", "2010-12-01 08:34:00", "4.25", "13047", "UK"],  # a comma
    ["536368", "22961", '"SAY ""HELLO"" MUG"', "3", "2010-12-01 08:35:00", "1.25", "13047", "UK"],  # quotes
    ["536368", "22962", '"TWO\nLINES"', "1", "2010-12-01 08:36:00", "0.85", "13047", "UK"],  # a newline
    ["536369", "85123A", "  ", "1", "", "", "12583", ""],  # blank description, no date, no price
    ["536369", "22962", "ROSE", "2", "2010-12-01 08:36:00", "0.85", "12583.0", "UK"],  # same time, later row
]


def write(path: Path, text: str) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def lines(header=HEADER, rows=QUOTED) -> str:
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def same(a: ingest.Transactions, b: ingest.Transactions) -> None:
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            if x.dtype.kind == "M":  # NaT == NaT is False: compare the numbers
                x, y = x.view(np.int64), y.view(np.int64)
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), field.name
        else:
            assert x == y, field.name


def three_ways(path: Path, monkeypatch) -> ingest.Transactions:
    """The file's transactions read with the prefetch, without it, and by pandas' reader alone: all equal."""
    csv_fast.prefetch(path)
    prefetched = load_transactions(path)
    assert not prefetch._started  # picked up, and forgotten
    alone = load_transactions(path)
    same(prefetched, alone)
    with monkeypatch.context() as m:
        m.setattr(csv_fast, "read_encoded", lambda *_args: None)  # as without pyarrow
        same(prefetched, load_transactions(path))
    return prefetched


@pytest.mark.parametrize("name", ["retail.csv", "retail.csv.gz"])
def test_prefetched_read_gives_the_same_baskets(tmp_path, monkeypatch, name):
    tx = three_ways(write(tmp_path / name, lines()), monkeypatch)
    assert "JAM MAKING SET, PRINTED" in tx.descriptions and 'SAY "HELLO" MUG' in tx.descriptions
    assert tx.descriptions[tx.item_codes.index("22962")] == "ROSE"  # the later of two lines at the same time


def test_header_variants_and_byte_order_mark(tmp_path, monkeypatch):
    header = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
    three_ways(write(tmp_path / "ii.csv", "\ufeff" + lines(header)), monkeypatch)
    # a column named twice (pandas calls the second "Country.1"): the prefetch leaves both out
    three_ways(
        write(tmp_path / "twice.csv", lines([*HEADER[:-1], "Country"], [r[:-1] + ["UK"] for r in QUOTED])), monkeypatch
    )


def outcome(path: Path) -> ingest.Transactions | str:
    try:
        return load_transactions(path)
    except DataFileError as err:
        return err.message


def test_a_failed_prefetch_leaves_the_reading_as_it_was(tmp_path):
    latin = tmp_path / "latin.csv"  # bad UTF-8, in a column training ignores (the prefetch reads every column)
    latin.write_bytes(lines().replace(",UK", ",UK\xe9").encode("latin-1"))
    ragged = write(tmp_path / "ragged.csv", lines(rows=[*QUOTED[:3], ["536370", "22963", "X", "1"]]))
    bad_header = write(tmp_path / "header.csv", '"InvoiceNo,StockCode\n' + lines()[10:])
    for path in (latin, ragged, bad_header):
        csv_fast.prefetch(path)
        prefetched = outcome(path)
        prefetch._started.clear()  # a header refused before the read is left to the end of the process
        alone = outcome(path)
        if isinstance(alone, str):
            assert prefetched == alone
        else:
            same(prefetched, alone)


def test_prefetch_is_skipped_where_it_cannot_help(tmp_path):
    csv_fast.prefetch(tmp_path / "missing.csv")
    csv_fast.prefetch(write(tmp_path / "retail.csv", lines()), encoding="latin-1")  # pandas' reader decodes it
    csv_fast.prefetch("s3://bucket/retail.csv")
    csv_fast.prefetch(tmp_path)
    assert not prefetch._started


def test_latest_per_item_as_a_sort_of_the_three_keys():
    rng = np.random.default_rng(0)
    for n_items in (5, 70_000):  # 16-bit item numbers (the radix sort) and wider ones
        item = rng.integers(0, n_items, 20_000).astype(np.int32)
        when = rng.choice(np.array([NO_TIME, 10, 20, 30], dtype=np.int64), len(item))  # many ties, undated lines
        lines = pd.DataFrame({"item": item, "t": when, "row": np.arange(len(item))})
        expected = lines.sort_values(["item", "t", "row"]).drop_duplicates("item", keep="last")["row"].to_numpy()
        assert np.array_equal(_latest_per_item(item, when), expected)


def test_a_utf8_csv_is_read_and_cleaned_without_pandas(tmp_path):
    """pandas' import (about 0.15 s) stays out of a csv training's reading and cleaning: Arrow reads, numpy cleans."""
    import subprocess
    import sys

    path = write(tmp_path / "orders.csv.gz", lines())
    code = (
        "import sys; from recommender.training.ingest import load_transactions; "
        f"tx = load_transactions({str(path)!r}); print(len(tx.basket_ids), 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(load_transactions(path).basket_ids)), "False"]


def test_first_appearance_is_pandas_factorize():
    rng = np.random.default_rng(7)
    for n, size in ((5, 0), (5, 1), (300, 5000), (70_000, 20_000)):
        codes = rng.integers(0, n, size).astype(np.int32)
        rows, firsts = cleaning.first_appearance(codes, n)
        expected_rows, expected_firsts = pd.factorize(codes, sort=False)
        assert rows.tolist() == expected_rows.tolist() and firsts.tolist() == expected_firsts.tolist()


def test_dates_and_quantities_read_as_pandas_reads_them():
    """The csv export's dates read by numpy, and plain quantities by Python, as pandas reads them; anything else
    (another form, a day the month lacks, an old year) by pandas itself."""
    iso = ["2010-12-01 08:26:00", "2012-02-29 23:59:59", "1999-01-31 00:00:00"]
    cases = [
        iso,
        [*iso, ""],
        [""],
        [*iso, "2011-02-29 10:00:00"],
        [*iso, "12/1/2010 8:26"],
        ["1969-12-31 23:59:59"],
        [],
    ]
    for values in cases:
        expected = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", format="mixed")
        assert cleaning._epoch_seconds(values).tolist() == expected.to_numpy("datetime64[s]").view(np.int64).tolist()
    quantities = np.array(["6", "0", "-0", "-3", "1.", "0.5", "007", "1e3", " 2", "", "x", "-0.0", "12.50"], object)
    for values in (quantities[:7], quantities):
        expected = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(float, na_value=np.nan)
        assert cleaning._positive(values).tolist() == (expected > 0).tolist()


def test_a_command_that_exits_during_the_prefetch_exits_cleanly(tmp_path):
    """A command that stops before it reads (a bad setting, say) while Arrow is still reading: the interpreter
    waits for the read (the thread is not a daemon) instead of tearing Arrow down mid-read, which crashed the
    process (exit -11) about half the time on Online Retail's csv.gz."""
    import subprocess
    import sys
    import threading

    path = write(tmp_path / "orders.csv.gz", lines())
    started = prefetch.start(path, lambda _p: threading.current_thread().daemon, "test-prefetch")
    assert started is None and prefetch.take(path) == {"value": False}
    code = (
        f"import time; from recommender.training import csv_fast; csv_fast.prefetch({str(path)!r}); raise SystemExit(3)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 3
