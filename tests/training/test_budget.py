"""The memory bound of a training: estimated from the cleaned data before the heavy stages, refused over the limit."""

import pytest

from recommender import cli
from recommender.core import registry
from recommender.core.errors import DataFileError
from recommender.training import budget
from recommender.training.ingest import load_transactions
from recommender.training.pipeline import TrainingParams


def junk_csv(path, codes: int):
    """A file of distinct junk product codes, four to an invoice: every product a new one."""
    lines = ["InvoiceNo,StockCode,Description,CustomerID"]
    lines += [f"{i // 4},J{i * 7919 % 10**9:09d},JUNK,{i % 50 if i % 3 else ''}" for i in range(codes)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_estimate_follows_the_items_and_the_rows():
    small = budget.estimate_peak_bytes(items=4_000, rows=26_000, entries=800_000)
    assert 0.4e9 < small < 1e9  # Online Retail: 0.7 GB measured
    per_item = budget.estimate_peak_bytes(200_000, 50_000, 200_000) - budget.estimate_peak_bytes(
        100_000, 50_000, 200_000
    )
    assert 0.5e9 < per_item < 1.5e9  # ~10 KB per product at the defaults
    assert budget.estimate_peak_bytes(1_000_000, 250_000, 1_000_000) > 10e9  # the junk file of the review
    assert budget.estimate_peak_bytes(100_000, 1_080_000, 19_000_000) < budget.DEFAULT_LIMIT_GB * 1e9  # scale set
    assert budget.default_limit_gb() == min(8.0, budget.machine_memory_bytes() / 2e9)


def test_matrix_size_counts_baskets_and_returning_customers_histories(tmp_path):
    path = tmp_path / "small.csv"
    path.write_text(
        "InvoiceNo,StockCode,Description,CustomerID\n"
        "1,A1,a,7\n1,B2,b,7\n2,B2,b,7\n2,C3,c,7\n3,A1,a,\n3,C3,c,\n4,A1,a,8\n4,B2,b,8\n"
    )
    tx = load_transactions(path)
    # 4 baskets and customer 7 (two invoices; 8 has one); 8 pairs, and at most 4 in 7's history (3 in fact).
    assert budget.matrix_size(tx, TrainingParams()) == (5, 12)


def test_too_many_items_are_refused_in_one_line_before_the_heavy_stages(trained_storage, tmp_path, monkeypatch, capsys):
    before = registry.list_versions(trained_storage)
    monkeypatch.setenv("MAX_TRAINING_GB", "0.5")
    assert cli.main(["train", str(junk_csv(tmp_path / "junk.csv", 20_000))]) == 1
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert line.startswith("error: this training would need about 0.") and "20,000 distinct products" in line
    assert "over the limit of 0.5 GB (MAX_TRAINING_GB)" in line and "MAX_TRAINING_GB=1" in line
    assert "memory: about" in out and "matrix:" not in out  # stopped before building anything
    assert registry.list_versions(trained_storage) == before
    monkeypatch.setattr(budget, "default_limit_gb", lambda: 0.25)
    with pytest.raises(DataFileError, match=r"over the limit of 0.2 GB \(the default: 8 GB, or half"):
        budget.check_memory(load_transactions(tmp_path / "junk.csv"), TrainingParams(), None, lambda _m: None)


def test_the_reranker_adds_its_bounded_rows_and_counts_two_fitted_at_once():
    from dataclasses import replace

    from recommender.training.reranker import RerankParams

    assert budget.rerank_bytes(20_000, TrainingParams()) == 0  # not asked for
    on = TrainingParams(rerank=RerankParams(enabled=True))
    online_retail = budget.rerank_bytes(20_000, on)
    assert 1.0e9 < online_retail < 1.6e9  # 1.30 GB measured (summed PSS, two re-rankers at once)
    assert budget.rerank_bytes(10_000_000, on) == budget.rerank_bytes(1_000_000, on)  # bounded by max_queries
    assert budget.rerank_bytes(20_000, replace(on, holdout=None)) == online_retail // 2  # one re-ranker only
    assert budget.rerank_bytes(400, on) < online_retail / 10  # a small file: few validation queries
