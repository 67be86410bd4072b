"""The Spark engine against the single-machine trainer: the same artifacts, the same cleaning report, the same inputs
(Parquet parts, s3:// through moto's server) and the same errors; local[2], one JVM for the module."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recommender.core import registry
from recommender.core.errors import DataFileError
from recommender.core.storage import LocalStorage
from recommender.serving.model import load_model
from recommender.training.pipeline import train
from tests.conftest import ROOT, free_port

pytest.importorskip("pyspark", reason="the spark extra is not installed (make devel installs it)")


def quiet(_message):
    pass


@pytest.fixture(scope="module")
def spark():
    """One local[2] session for the module: the engine reuses an active session (as under spark-submit)."""
    from recommender.training.spark_session import QUICK_START, session

    active, _created = session("local[2]", QUICK_START)
    yield active
    active.stop()


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_csv):
    """The single-machine model of the tiny dataset, and its folder."""
    folder = tmp_path_factory.mktemp("single")
    result = train(tiny_csv, LocalStorage(folder), progress=quiet)
    return result, folder / "models" / "versions" / result.version


def artifacts(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "manifest.json"}


def assert_same_model(spark_result, spark_folder, single_result, single_folder):
    """Every artifact: items and neighbour sets identical, weights within 1e-4, embeddings' answers identical."""
    a, b = artifacts(single_folder), artifacts(spark_folder)
    assert set(a) == set(b)
    assert a["catalog.json"] == b["catalog.json"]
    for name in ("table_indptr.npy", "table_target.npy"):
        assert np.array_equal(np.load(single_folder / name), np.load(spark_folder / name)), name
    assert np.abs(np.load(single_folder / "table_weight.npy") - np.load(spark_folder / "table_weight.npy")).max() < 1e-4
    for name in set(a) - {"catalog.json", "table_indptr.npy", "table_target.npy", "table_weight.npy", "index.ann"}:
        assert a[name] == b[name], name  # artifacts other engines' features add must agree too
    assert spark_result.manifest["counts"] == single_result.manifest["counts"]
    for part in ("model", "period", "evaluation"):  # the holdout's baskets and figures too
        a, b = (dict(r.manifest.get(part) or {}) for r in (spark_result, single_result))
        for timing in ("seconds", "model_seconds"):
            a.pop(timing, None), b.pop(timing, None)
        assert a == b, part
    storage_a = LocalStorage(single_folder.parents[2])
    storage_b = LocalStorage(spark_folder.parents[2])
    model_a = load_model(storage_a, single_result.version)
    model_b = load_model(storage_b, spark_result.version)
    codes = model_a.items.codes
    for basket in ([codes[0]], [codes[3], codes[7]], codes[10:15], ["unknown", codes[20]]):
        a, b = model_a.recommend(basket, 10), model_b.recommend(basket, 10)
        assert [(s.item, round(s.score, 5)) for s in a.items] == [(s.item, round(s.score, 5)) for s in b.items]


def test_spark_trains_the_same_model(spark, single, tmp_path, tiny_csv):
    single_result, single_folder = single
    lines = []
    result = train(tiny_csv, LocalStorage(tmp_path), progress=lines.append, engine="spark")
    engine = result.manifest["engine"]
    assert engine["name"] == "spark" and engine["spark_version"] == spark.version and engine["master"] == "local[2]"
    assert_same_model(result, tmp_path / "models" / "versions" / result.version, single_result, single_folder)
    text = "\n".join(lines)
    for expected in ("rows read", "rows dropped", "baskets", "matrix", "item-item table", "svd", "index"):
        assert expected in text
    # the cleaning report is printed in the same words by both engines
    single_report = [line for line in _report_lines(single_result)]
    assert all(line in text for line in single_report)


def test_a_bigger_input_gets_more_partitions_and_smaller_blocks_and_the_same_model(
    spark, single, tmp_path, tiny_csv, monkeypatch
):
    from recommender.training import distributed, distributed_table

    assert distributed.matrix_partitions(9_600_000, 2) == 4  # the 10M-row set: two per core
    assert distributed.matrix_partitions(96_000_000, 2) == 39
    monkeypatch.setattr(distributed, "ROWS_PER_PART", 300)
    monkeypatch.setattr(distributed_table, "GRAM_BLOCK", 16)  # 60 items: four blocks of co-occurrence rows,
    monkeypatch.setattr(distributed_table, "TARGET_BLOCK", 16)  # four blocks of ridge systems,
    monkeypatch.setattr(distributed_table, "DENSE_BYTES", 4 * 61 * 5)  # computed five rows at a time
    lines = []
    result = train(tiny_csv, LocalStorage(tmp_path), progress=lines.append, engine="spark")
    kept = result.manifest["counts"]["rows_kept"]
    text = "\n".join(lines)
    assert f"entries in {-(-kept // 300)} partitions" in text and kept > 1500
    assert "neighbours: 4 block(s) of 16 items" in text and "ridge systems: 4 block(s) of 16 targets" in text
    seconds = [float(s) for s in re.findall(r"(?:neighbours|ridge systems): .*\(([\d.]+) s\)", text)]
    assert len(seconds) == 4 and max(seconds) < 600  # both passes, for both models; their own times, not a clock's
    single_result, single_folder = single
    assert_same_model(result, tmp_path / "models" / "versions" / result.version, single_result, single_folder)


def _report_lines(result):
    from recommender.training.ingest import CleaningReport, describe_report

    counts = result.manifest["counts"]
    report = CleaningReport(
        rows_read=counts["rows_read"],
        dropped=counts["dropped"],
        rows_kept=counts["rows_kept"],
        baskets=counts["baskets"],
        items=counts["items"],
        customers=counts["customers"],
        guest_baskets=counts["guest_baskets"],
    )
    return describe_report(report)


@pytest.fixture(scope="module")
def parquet_parts(tmp_path_factory, tiny_csv):
    """The tiny dataset as a folder of three Parquet parts (text columns, as a csv export converted)."""
    frame = pd.read_csv(tiny_csv, dtype=str, keep_default_na=False)
    folder = tmp_path_factory.mktemp("lake") / "tiny"
    folder.mkdir()
    for i, start in enumerate(range(0, len(frame), 800)):
        frame.iloc[start : start + 800].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    (folder / "_SUCCESS").write_text("")
    return folder


def test_spark_reads_parquet_parts_from_s3(spark, single, parquet_parts, tmp_path, monkeypatch):
    # two baskets span two of the three parts: their pairs are merged, the others are taken as their part sent them
    from moto.server import ThreadedMotoServer

    single_result, single_folder = single
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for name, value in (
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ):
            monkeypatch.setenv(name, value)
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="lake")
        for part in sorted(parquet_parts.glob("part-*")):
            client.upload_file(str(part), "lake", f"retail/{part.name}")
        remote = train("s3://lake/retail", LocalStorage(tmp_path / "s3"), progress=quiet, engine="spark")
        assert remote.manifest["source"]["location"] == "s3://lake/retail" and remote.manifest["source"]["parts"] == 3
        assert_same_model(
            remote, tmp_path / "s3" / "models" / "versions" / remote.version, single_result, single_folder
        )
    finally:
        server.stop()


def test_bad_input_gives_the_same_error_and_keeps_the_active_model(spark, single, tmp_path):
    single_result, single_folder = single
    storage = LocalStorage(tmp_path / "store")
    shutil.copytree(single_folder.parents[2], tmp_path / "store")
    before = registry.active_version(storage)
    bad = tmp_path / "bad.csv"
    bad.write_text("InvoiceNo,StockCode,Quantity\n1,A,1\n")
    with pytest.raises(DataFileError) as single_error:
        train(bad, storage, progress=quiet)
    with pytest.raises(DataFileError) as spark_error:
        train(bad, storage, progress=quiet, engine="spark")
    assert spark_error.value.message == single_error.value.message
    assert "lacks required column(s) Description, CustomerID" in spark_error.value.message
    junk = tmp_path / "junk.csv"
    junk.write_text("InvoiceNo,StockCode,Description,CustomerID\nC1,A,x,\n2,POST,postage,\n")
    with pytest.raises(DataFileError, match=r"nothing left in junk.csv after cleaning \(1 cancelled invoice, 1 serv"):
        train(junk, storage, progress=quiet, engine="spark")
    xlsx = tmp_path / "history.xlsx"
    xlsx.write_bytes(b"not read")
    with pytest.raises(DataFileError, match="history.xlsx: .xlsx is read by the single-machine trainer only"):
        train(xlsx, storage, progress=quiet, engine="spark")
    assert registry.active_version(storage) == before
    assert registry.list_versions(storage) == [before]


def test_the_default_trainer_and_the_serving_code_never_import_pyspark(tmp_path, tiny_csv):
    code = (
        "import sys\nfrom recommender.core.storage import LocalStorage\nimport recommender.cli\n"
        "import recommender.serving.model\nfrom recommender.training.pipeline import train\n"
        f"train({str(tiny_csv)!r}, LocalStorage({str(tmp_path)!r}), progress=lambda m: None)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pyspark', 'py4j', 'recommender.training.distrib'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')) == []


def test_a_worker_killed_for_memory_is_named_in_one_line(spark):
    import os
    import signal

    from recommender.training.spark_session import failure_cause

    def die(_row):
        os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does

    with pytest.raises(Exception) as failed:
        spark.sparkContext.parallelize([1], 1).map(die).collect()
    assert "out of memory" in failure_cause(failed.value)


@pytest.mark.slow
def test_spark_trains_the_single_machines_reranker(spark, tmp_path, tiny_csv, monkeypatch):
    """RERANK=1 with Spark: the driver's copy of the input is ingest's, and the version carries the single
    machine's re-ranker (the same rerank.npz, trees and figures), which answers as the single machine's does."""
    from dataclasses import replace

    from recommender.training import distributed_rerank
    from recommender.training.ingest import load_transactions
    from tests.conftest import TINY_RERANK

    params = replace(TINY_RERANK, holdout=None)  # one re-ranker (two with the holdout): half the Spark models
    single_result = train(tiny_csv, LocalStorage(tmp_path / "single"), params, progress=quiet)
    collected = []
    collect = distributed_rerank.collect_transactions
    monkeypatch.setattr(
        distributed_rerank, "collect_transactions", lambda *a: collected.append(collect(*a)) or collected[-1]
    )
    lines = []
    result = train(tiny_csv, LocalStorage(tmp_path / "spark"), params, progress=lines.append, engine="spark")
    ingested = load_transactions(tiny_csv)
    (tx,) = collected
    for field in (
        "item_codes",
        "descriptions",
        "pair_basket",
        "pair_item",
        "basket_ids",
        "basket_time",
        "basket_customer",
        "item_prices",
    ):
        assert np.array_equal(np.asarray(getattr(tx, field)), np.asarray(getattr(ingested, field))), field
    single_folder = tmp_path / "single" / "models" / "versions" / single_result.version
    spark_folder = tmp_path / "spark" / "models" / "versions" / result.version
    assert (spark_folder / "rerank.npz").read_bytes() == (single_folder / "rerank.npz").read_bytes()
    spec_a, spec_b = (dict(r.manifest["model"]["rerank"]) for r in (single_result, result))
    assert spec_b.pop("seconds") > 0 and spec_a.pop("seconds") > 0
    assert spec_a == spec_b and spec_b["trees"] is True
    assert "rerank.npz" in result.manifest["artifacts"]
    model_a = load_model(LocalStorage(tmp_path / "single"), single_result.version)
    model_b = load_model(LocalStorage(tmp_path / "spark"), result.version)
    assert model_b.reranker is not None
    codes = model_a.items.codes
    for basket in ([codes[0]], [codes[3], codes[7]], codes[10:15]):
        a, b = model_a.recommend(basket, 10), model_b.recommend(basket, 10)
        assert [(s.item, round(s.score, 5)) for s in a.items] == [(s.item, round(s.score, 5)) for s in b.items]
    assert "does not train one" not in "\n".join(lines)


def test_baskets_spanning_parts_are_merged_by_one_group_by_when_too_many_to_broadcast(
    spark, single, parquet_parts, tmp_path, monkeypatch
):
    from recommender.training import distributed_read

    monkeypatch.setattr(distributed_read, "SPANNING_BROADCAST", 0)  # two baskets span the 800-row parts
    result = train(parquet_parts, LocalStorage(tmp_path), progress=quiet, engine="spark")
    single_result, single_folder = single
    assert_same_model(result, tmp_path / "models" / "versions" / result.version, single_result, single_folder)


@pytest.fixture(scope="module")
def whole_invoice_parts(tmp_path_factory, tiny_csv):
    """The tiny dataset as three Parquet parts cut between invoices (customers still span parts)."""
    frame = pd.read_csv(tiny_csv, dtype=str, keep_default_na=False)
    folder = tmp_path_factory.mktemp("lake") / "whole"
    folder.mkdir()
    starts = np.flatnonzero(frame["InvoiceNo"].ne(frame["InvoiceNo"].shift()).to_numpy())
    cuts = [0, *(starts[np.searchsorted(starts, c)] for c in (len(frame) // 3, 2 * len(frame) // 3)), len(frame)]
    for i in range(3):
        frame.iloc[cuts[i] : cuts[i + 1]].to_parquet(folder / f"part-{i:05d}.parquet", index=False)
    return folder


def test_parts_of_whole_invoices_build_the_matrix_from_their_blocks_without_pairs_as_rows(
    spark, single, whole_invoice_parts, tmp_path, monkeypatch
):
    from recommender.training import distributed_blocks, distributed_read, distributed_rows

    monkeypatch.setattr(distributed_read, "BLOCK_PAIRS", 300)  # each part's pairs in several blocks

    def refused(*_args, **_kwargs):
        raise AssertionError("pairs went through Spark as rows")

    monkeypatch.setattr(distributed_rows, "items", refused)
    monkeypatch.setattr(distributed_rows, "matrix_rows", refused)
    # The held-out baskets' items, both models' items and sample invoices: one pass over the blocks, not five.
    passes = []
    gather = distributed_blocks.gather
    monkeypatch.setattr(distributed_blocks, "gather", lambda *a: passes.append(a) or gather(*a))
    for name in ("item_figures", "pairs_frame"):
        monkeypatch.setattr(distributed_blocks, name, refused)
    result = train(whole_invoice_parts, LocalStorage(tmp_path), progress=quiet, engine="spark")
    assert result.manifest["source"]["parts"] == 3
    assert len(passes) == 1 and len(passes[0][1]) == 2  # the published model's figures and the measured one's
    single_result, single_folder = single
    assert_same_model(result, tmp_path / "models" / "versions" / result.version, single_result, single_folder)


def test_when_the_measured_model_is_the_published_one_the_engines_still_agree(
    spark, whole_invoice_parts, tiny_csv, tmp_path
):
    from dataclasses import replace

    from recommender.training.holdout import HoldoutPolicy
    from recommender.training.recipe import TrainingParams

    params = replace(TrainingParams(), holdout=HoldoutPolicy(separate_above=1.0))  # one model, without the holdout
    single_result = train(tiny_csv, LocalStorage(tmp_path / "single"), params, progress=quiet)
    result = train(whole_invoice_parts, LocalStorage(tmp_path / "spark"), params, progress=quiet, engine="spark")
    assert result.manifest["evaluation"]["measured"].startswith("the published model")
    folders = [
        tmp_path / name / "models" / "versions" / r.version
        for name, r in (("spark", result), ("single", single_result))
    ]
    assert_same_model(result, folders[0], single_result, folders[1])
