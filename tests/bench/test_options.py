"""Where the benchmark finds Online Retail (BENCH_DATA_DIR, one setting) and what it says when the file is absent."""

import os
import subprocess
import sys

import pytest

from bench import options
from recommender.core.errors import ConfigError
from tests.conftest import ROOT


def test_data_dir_defaults_to_data_datasets_in_the_repository(tmp_path):
    assert options.data_dir({}) == ROOT / "data" / "datasets"
    assert options.data_dir({"BENCH_DATA_DIR": ""}) == ROOT / "data" / "datasets"
    assert options.data_dir({"BENCH_DATA_DIR": str(tmp_path)}) == tmp_path.resolve()


def test_the_files_are_found_in_the_data_dir(tmp_path):
    for name in (options.RETAIL_CSV, options.RETAIL_XLSX):
        (tmp_path / name).write_bytes(b"x")
    opts = options.Options(data_dir=tmp_path)
    assert (opts.csv, opts.xlsx) == (tmp_path / "online_retail.csv.gz", tmp_path / "online_retail.xlsx")
    options.check_data(["train", "serve", "scale"], opts)


def test_only_the_parts_that_read_online_retail_need_it(tmp_path):
    (tmp_path / options.RETAIL_CSV).write_bytes(b"x")
    opts = options.Options(data_dir=tmp_path)
    options.check_data(["serve", "cold", "merch", "logins", "scale", "search"], opts)
    with pytest.raises(ConfigError, match=r"needs Online Retail \(online_retail.xlsx\)"):
        options.check_data(["search", "train"], opts)


def test_a_missing_file_stops_the_benchmark_with_one_line(tmp_path):
    env = {**os.environ, "BENCH_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "train", "--quick", "--out", str(tmp_path / "results")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: the benchmark needs Online Retail (online_retail.csv.gz) in {tmp_path.resolve()}/: put it there "
        "or set BENCH_DATA_DIR=<folder>"
    ]
    assert not (tmp_path / "results").exists()


def test_spark_checks_the_agreement_file_before_its_long_runs(tmp_path):
    from bench.spark import SparkBenchOptions, bench_spark

    with pytest.raises(ConfigError, match="BENCH_DATA_DIR"):
        bench_spark(SparkBenchOptions(data_dir=tmp_path, out_dir=tmp_path / "out", scale=False))
    assert not (tmp_path / "out").exists()
