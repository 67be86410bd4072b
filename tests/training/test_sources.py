"""Inputs beyond one csv: Parquet (typed columns), folders of parts, s3:// objects and prefixes, and their errors."""

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recommender.core.errors import DataFileError
from recommender.core.storage import LocalStorage
from recommender.training.ingest import load_transactions
from recommender.training.pipeline import train
from recommender.training.sources import fingerprint, resolve
from tests.conftest import BUCKET
from tests.training.test_ingest import ROWS, write_csv


def same(a, b):
    assert a.item_codes == b.item_codes and a.descriptions == b.descriptions and a.basket_ids == b.basket_ids
    assert a.report == b.report
    assert np.array_equal(a.pair_basket, b.pair_basket) and np.array_equal(a.pair_item, b.pair_item)
    assert np.array_equal(a.basket_customer, b.basket_customer)
    assert np.array_equal(a.basket_time, b.basket_time, equal_nan=True)


def typed_table(rows=ROWS) -> pa.Table:
    """ROWS as a data lake would type them: integer quantities, timestamps, float customer ids with nulls."""
    columns = list(zip(*rows))
    return pa.table(
        {
            "InvoiceNo": list(columns[0]),
            "StockCode": list(columns[1]),
            "Description": [v or None for v in columns[2]],
            "Quantity": pa.array([int(v) for v in columns[3]], pa.int64()),
            "InvoiceDate": pa.array(np.array(columns[4], dtype="datetime64[s]")),
            "UnitPrice": [float(v) for v in columns[5]],
            "CustomerID": pa.array([float(v) if v else None for v in columns[6]], pa.float64()),
            "Country": list(columns[7]),
        }
    )


def test_typed_parquet_reads_as_the_csv(tmp_path):
    pq.write_table(typed_table(), tmp_path / "retail.parquet")
    same(load_transactions(tmp_path / "retail.parquet"), load_transactions(write_csv(tmp_path / "retail.csv")))


def test_folder_of_parts_reads_as_one_file(tmp_path, tiny_csv):
    lines = tiny_csv.read_text().splitlines(keepends=True)
    folder = tmp_path / "parts"
    (folder / "year=2011").mkdir(parents=True)
    (folder / "part-0.csv").write_text("".join(lines[:900]))
    with gzip.open(folder / "year=2011" / "part-1.csv.gz", "wt") as f:  # parts in subfolders, sorted by path
        f.write(lines[0] + "".join(lines[900:]))
    (folder / "_SUCCESS").write_text("")  # what Spark and Hadoop leave beside their parts
    same(load_transactions(folder), load_transactions(tiny_csv))
    info = fingerprint(resolve(folder))
    assert info["parts"] == 2 and info["file"] == "parts" and len(info["sha256"]) == 64


def test_folder_of_parquet_parts_trains_like_the_csv(tmp_path, tiny_csv):
    import pandas as pd

    frame = pd.read_csv(tiny_csv, dtype=str, keep_default_na=False)
    folder = tmp_path / "lake"
    folder.mkdir()
    for i, start in enumerate(range(0, len(frame), 800)):
        frame.iloc[start : start + 800].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    a = train(folder, LocalStorage(tmp_path / "a"), progress=lambda _m: None)
    b = train(tiny_csv, LocalStorage(tmp_path / "b"), progress=lambda _m: None)
    assert a.manifest["artifacts"] == b.manifest["artifacts"] and a.manifest["counts"] == b.manifest["counts"]
    assert a.manifest["source"]["parts"] == 3 and a.manifest["engine"] == {"name": "single"}


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "no .csv, .csv.gz or .parquet parts in folder"),
        ({"a.csv": "x", "b.parquet": "y"}, "mixes csv and Parquet"),
        ({"a.csv": "x", "notes.txt": "y"}, "holds notes.txt"),
        ({"a.xlsx": "x"}, "holds a.xlsx"),
    ],
)
def test_bad_folders(tmp_path, files, message):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    with pytest.raises(DataFileError, match=message):
        load_transactions(folder)


def test_damaged_parquet_and_missing_columns(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataFileError, match="cannot read bad.parquet as .parquet"):
        load_transactions(tmp_path / "bad.parquet")
    pq.write_table(typed_table().drop(["CustomerID"]), tmp_path / "cols.parquet")
    with pytest.raises(DataFileError, match="cols.parquet lacks required column.s. CustomerID"):
        load_transactions(tmp_path / "cols.parquet")
    pq.write_table(typed_table().slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(DataFileError, match="header but no data rows"):
        load_transactions(tmp_path / "empty.parquet")


def test_s3_object_and_prefix(s3, tmp_path, tiny_csv):
    csv = write_csv(tmp_path / "retail.csv")
    s3.upload_file(str(csv), BUCKET, "exports/retail.csv")
    pq.write_table(typed_table(ROWS[:7]), tmp_path / "p0.parquet")
    pq.write_table(typed_table(ROWS[7:]), tmp_path / "p1.parquet")
    s3.upload_file(str(tmp_path / "p0.parquet"), BUCKET, "lake/retail/part-0.parquet")
    s3.upload_file(str(tmp_path / "p1.parquet"), BUCKET, "lake/retail/part-1.parquet")
    expected = load_transactions(csv)
    same(load_transactions(f"s3://{BUCKET}/exports/retail.csv"), expected)
    same(load_transactions(f"s3://{BUCKET}/lake/retail"), expected)
    same(load_transactions(f"s3a://{BUCKET}/lake/retail/"), expected)
    source = resolve(f"s3://{BUCKET}/lake/retail")
    assert [p.name for p in source.parts] == ["part-0.parquet", "part-1.parquet"] and source.folder
    with pytest.raises(DataFileError, match="file not found: s3://"):
        load_transactions(f"s3://{BUCKET}/nothing/here.csv")
    with pytest.raises(DataFileError, match="bucket no-such-bucket does not exist"):
        load_transactions("s3://no-such-bucket/x.csv")


def test_training_from_s3_records_the_source(s3, tmp_path, tiny_csv):
    s3.upload_file(str(tiny_csv), BUCKET, "in/tiny.csv")
    result = train(f"s3://{BUCKET}/in/tiny.csv", LocalStorage(tmp_path), progress=lambda _m: None)
    source = result.manifest["source"]
    assert source["file"] == "tiny.csv" and source["location"] == f"s3://{BUCKET}/in/tiny.csv"
    assert source["bytes"] == tiny_csv.stat().st_size
    local = train(tiny_csv, LocalStorage(tmp_path / "local"), progress=lambda _m: None)
    assert result.manifest["artifacts"] == local.manifest["artifacts"]
