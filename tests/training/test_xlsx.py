"""The workbook reader: rows streamed in chunks, the parse started early, every cell read as before."""

from datetime import date, datetime

import numpy as np
import pytest
from openpyxl import Workbook

from recommender.core.errors import DataFileError
from recommender.training import prefetch, xlsx
from recommender.training.ingest import load_transactions
from tests.training.test_ingest import HEADER, ROWS, write_xlsx

BLANK = ["#N/A"] + [None] * 7  # an error cell: calamine reads it as empty, so the row is blank but in the range


def same(a, b) -> None:
    assert a.report == b.report
    assert (a.item_codes, a.descriptions, a.basket_ids) == (b.item_codes, b.descriptions, b.basket_ids)
    for name in ("pair_basket", "pair_item", "basket_customer", "item_prices"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(a.basket_time.view(np.int64), b.basket_time.view(np.int64))


def sheet(path, rows, header=HEADER, at=(1, 1)):
    wb = Workbook()
    ws = wb.active
    for r, row in enumerate([header, *rows]):
        for c, value in enumerate(row):
            if value is not None:
                ws.cell(at[0] + r, at[1] + c, int(value) if str(value).isdigit() else value)
    wb.save(path)
    return path


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_chunks_of_any_size_read_the_same(tmp_path, monkeypatch, size):
    # blank rows inside (counted and dropped, as always) and at the end (left out of the used range's rows)
    rows = [*ROWS[:4], BLANK, BLANK, *ROWS[4:], BLANK, BLANK, BLANK]
    path = sheet(tmp_path / "r.xlsx", rows)
    whole = load_transactions(path)
    assert whole.report.rows_read == len(ROWS) + 2
    assert whole.report.dropped["quantity <= 0"] == 2 + 2  # a blank row has no quantity either
    monkeypatch.setattr(xlsx, "CHUNK_ROWS", size)
    same(load_transactions(path), whole)


def test_the_same_as_the_csv_export_would_read(tmp_path):
    plain = load_transactions(write_xlsx(tmp_path / "a1.xlsx"))
    same(load_transactions(sheet(tmp_path / "c3.xlsx", ROWS, at=(1, 3))), plain)  # columns A and B empty


def test_cells_of_every_kind_become_the_text_the_csv_would_hold(tmp_path):
    kinds = [True, 2.5, 1e-05, 85123.0, date(2010, 12, 1), datetime(2010, 12, 1, 8, 26, 5), "  padded  ", 7]
    rows = [["536365", f"C{i}", kind, "1", "2010-12-01 08:26:00", "1", "17850", "UK"] for i, kind in enumerate(kinds)]
    tx = load_transactions(sheet(tmp_path / "kinds.xlsx", [[*r[:1], r[1].lstrip("C") + "A", *r[2:]] for r in rows]))
    assert tx.descriptions == [
        "True",
        "2.5",
        "1e-05",  # as Python writes it
        "85123",
        "2010-12-01",  # a whole day is a date
        "2010-12-01 08:26:05",
        "padded",
        "7",
    ]


def test_a_blank_header_over_blank_rows_is_an_empty_file(tmp_path):
    path = sheet(tmp_path / "blank.xlsx", [BLANK, BLANK], header=[None, "#N/A"])
    with pytest.raises(DataFileError, match="blank.xlsx is empty"):
        load_transactions(path)


def test_missing_columns_name_the_empty_columns_left_of_the_data(tmp_path):
    path = sheet(tmp_path / "cols.xlsx", [["1", "2"]], header=["InvoiceNo", "Code"], at=(1, 2))
    with pytest.raises(DataFileError, match="found: , InvoiceNo, Code$"):
        load_transactions(path)


def test_a_prefetched_parse_is_picked_up_once(tmp_path, monkeypatch):
    path = write_xlsx(tmp_path / "r.xlsx")
    expected = load_transactions(path)
    parses = []
    real = xlsx._parse
    monkeypatch.setattr(xlsx, "_parse", lambda p: parses.append(p) or real(p))
    xlsx.prefetch(str(path))
    xlsx.prefetch(path)  # a second call for the same file starts nothing
    same(load_transactions(path), expected)
    assert len(parses) == 1 and not prefetch._started
    load_transactions(path)  # nothing prefetched: parsed now
    assert len(parses) == 2


def test_a_prefetched_damaged_file_says_what_it_always_said(tmp_path):
    path = tmp_path / "fake.xlsx"
    path.write_bytes(bytes(range(256)) * 40)
    xlsx.prefetch(path)
    with pytest.raises(DataFileError, match="cannot read fake.xlsx as .xlsx"):
        load_transactions(path)
    assert not prefetch._started


@pytest.mark.parametrize("source", ["absent.xlsx", "s3://bucket/r.xlsx", "r.csv", "events:", "folder.xlsx"])
def test_prefetch_ignores_what_it_cannot_read_now(tmp_path, source):
    (tmp_path / "folder.xlsx").mkdir()
    write_xlsx(tmp_path / "r.csv")
    xlsx.prefetch(str(tmp_path / source) if "://" not in source else source)
    assert not prefetch._started


def test_the_collector_is_back_on_after_reading(tmp_path):
    import gc

    load_transactions(write_xlsx(tmp_path / "r.xlsx"))
    assert gc.isenabled()


@pytest.mark.parametrize("pandas_helper", [True, False])
def test_short_rows_are_padded_with_empty_cells(monkeypatch, pandas_helper):
    import sys

    if not pandas_helper:
        monkeypatch.setitem(sys.modules, "pandas._libs.lib", None)  # as if pandas had moved it
    cells = xlsx._object_array([[1, 2], [3]], 3)
    assert cells.tolist() == [[1, 3], [2, None], [None, None]]


def test_a_workbook_reads_into_coded_chunks_without_a_dataframe(tmp_path):
    from recommender.training.cleaning import CodedChunk
    from recommender.training.readers import read_part

    codes = [85123.0, " 85123", "85123.0"]  # a number, a padded text of it, a text that cleaning reads as it
    path = sheet(tmp_path / "r.xlsx", [[ROWS[0][0], code, *ROWS[0][2:]] for code in codes])
    (chunk,) = read_part(path, ".xlsx")
    assert isinstance(chunk, CodedChunk) and len(chunk) == 3
    code = chunk["StockCode"]
    assert code.array().tolist() == ["85123", "85123", "85123.0"]
    assert sorted(code.values.tolist()) == ["85123", "85123.0"]  # each text once, however the cells held it
    assert chunk["Quantity"].array().tolist() == ["6"] * 3


def test_pandas_is_imported_while_the_parse_still_runs(tmp_path):
    # Imported after the parse, pandas' import (some 0.2 s holding the GIL) was wall time the command waited for.
    import subprocess
    import sys

    path = write_xlsx(tmp_path / "r.xlsx")
    script = f"""
import sys
from recommender.training import prefetch, xlsx
from recommender.training.readers import read_part
real = prefetch.take
def take(path):
    print("pandas" in sys.modules)
    return real(path)
prefetch.take = take
assert "pandas" not in sys.modules
xlsx.prefetch({str(path)!r})
list(read_part(xlsx.Path({str(path)!r}), ".xlsx"))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]


def test_a_sheet_is_one_chunk_whose_texts_are_each_once_across_batches(tmp_path, monkeypatch):
    from recommender.training.readers import read_part

    codes = [85123.0, "85123", 85123.0, " 85123", 22633.0, True, 1.0, 1.0, True]  # batches of 2: repeats cross them
    path = sheet(tmp_path / "r.xlsx", [[ROWS[0][0], code, *ROWS[0][2:]] for code in codes] + [BLANK, BLANK])
    monkeypatch.setattr(xlsx, "CHUNK_ROWS", 2)
    (chunk,) = read_part(path, ".xlsx")
    assert len(chunk) == len(codes)  # the trailing blank rows left out, though a batch ends inside them
    code = chunk["StockCode"]
    assert code.array().tolist() == ["85123"] * 4 + ["22633", "True", "1", "1", "True"]
    values = code.values.tolist()  # (with "" of the blank rows left out)
    assert len(set(values)) == len(values) and {"1", "22633", "85123", "True"} <= set(values) <= {
        "",
        "1",
        "22633",
        "85123",
        "True",
    }
