"""The evaluation protocol: split, hiding, metrics on a hand-checked case, baselines, and a run on synthetic data."""

import json

import numpy as np
import pytest

from recommender.tools import evaluation
from recommender.tools.evaluation_protocol import Cases, score, temporal_split
from recommender.training.ingest import load_transactions
from recommender.training.recipe import TrainingParams
from recommender.training.reranker import RerankParams

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,CustomerID\n"


def write(tmp_path, lines):
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "".join(lines))
    return path


# Letter-only codes are service codes, so the items get digit codes that sort like the letters.
CODE = {"A": "11", "B": "12", "C": "13", "D": "14", "E": "15", "X": "19"}


def test_split_by_date_and_hide_one_known_item(tmp_path):
    rows = []
    for inv, day, items in [
        ("100", "2011-01-01", "ABC"),
        ("101", "2011-01-10", "ABD"),
        ("102", "2011-02-20", "ABE"),
        ("103", "2011-02-25", "AX"),
        ("104", "2011-02-26", "CD"),
    ]:
        rows += [f"{inv},{CODE[i]},d{i},1,{day} 10:00,1\n" for i in items]
    tx = load_transactions(write(tmp_path, rows))
    split = temporal_split(tx, days=10, seed=0)
    # Invoices 102..104 fall in the last 10 days (from 2011-02-16); training keeps 100 and 101.
    assert split.train.basket_ids == ["100", "101"]
    codes = [k for c in split.train.item_codes for k, v in CODE.items() if v == c]
    assert codes == ["A", "B", "C", "D"]
    # 102 has A, B known (E unknown); 103 has only A known: no case; 104 has C, D.
    assert len(split.cases) == 2
    rng = np.random.default_rng(0)
    first = ["A", "B"][int(rng.integers(2))]
    second = ["C", "D"][int(rng.integers(2))]
    assert [codes[h] for h in split.cases.hidden] == [first, second]
    assert [codes[q[0]] for q in split.cases.queries] == [{"A": "B", "B": "A"}[first], {"C": "D", "D": "C"}[second]]


def test_metrics_on_a_hand_checked_case():
    cases = Cases(queries=[np.array([0]), np.array([1]), np.array([2])], hidden=np.array([5, 6, 7]))
    ranked = [
        np.array([5, 1, 2]),  # hit at rank 1
        np.array([3, 4, 6]),  # hit at rank 3
        np.array([3, 4, 5]),  # miss
    ]
    result = score("x", ranked, cases, n_items=10)
    assert result.hr == pytest.approx(2 / 3)
    assert result.mrr == pytest.approx((1 + 1 / 3) / 3)
    assert result.ndcg == pytest.approx((1 + 1 / np.log2(4)) / 3)
    assert result.coverage == pytest.approx(6 / 10)  # items 1..6 were shown
    assert result.hr_curve[:3] == pytest.approx([1 / 3, 1 / 3, 2 / 3])


def test_evaluation_needs_dates(tmp_path):
    path = tmp_path / "nodates.csv"
    path.write_text("InvoiceNo,StockCode,Description,CustomerID\n1,11,a,\n1,12,b,\n")
    from recommender.core.errors import DataFileError

    with pytest.raises(DataFileError, match="needs dates"):
        temporal_split(load_transactions(path), 30)


def test_full_run_on_synthetic_data(tmp_path):
    from recommender.tools import synthetic

    data = tmp_path / "default.csv"
    synthetic.write_csv(synthetic.DEFAULT, data)
    # a re-ranker even on this small file (the default asks for more validation queries than it has)
    params = TrainingParams(
        rerank=RerankParams(min_queries=0, require_gain=False, max_rounds=20, hidden_per_basket=2, max_queries=1500)
    )
    report, folder = evaluation.run(
        data, days=30, out_dir=tmp_path / "reports", progress=lambda _m: None, params=params
    )
    by_name = {r.name.split(" ")[0]: r for r in report.results}
    assert set(by_name) == {"product", "first-stage", "popularity", "co-occurrence", "EASE"}
    assert report.cases > 100
    # each HR@10 with its bootstrap interval, and the product's gains over EASE, its first stage and popularity
    for r in report.results:
        assert r.hr_interval[0] <= r.hr <= r.hr_interval[1]
    assert [g.against.split(" ")[0] for g in report.gains] == ["EASE", "first-stage", "popularity"]
    for g in report.gains:
        assert g.low <= g.ratio <= g.high
    # The structure is learnable: every real method beats popularity, the product by far.
    assert by_name["product"].hr > 2 * by_name["popularity"].hr
    assert by_name["co-occurrence"].hr > by_name["popularity"].hr
    saved = json.loads((folder / "report.json").read_text())
    assert saved["cases"] == report.cases and len(saved["results"][0]["hr_curve"]) == 20
    assert (folder / "hr_at_k.png").read_bytes()[:4] == b"\x89PNG"
    assert "| method | HR@10" in (folder / "table.md").read_text()
    # Confidence on the test period, which the model never saw: close to what the shoppers bought.
    cal = saved["product_stats"]["calibration"]
    print(
        f"synthetic test period: ECE {cal['ece']:.4f}, predicted {cal['mean_predicted']:.4f}, "
        f"observed {cal['mean_observed']:.4f}"
    )
    assert (
        cal["calibrated"] and cal["observations"] > 1000 and sum(b["count"] for b in cal["bins"]) == cal["observations"]
    )
    assert cal["ece"] < 0.05 and abs(cal["mean_predicted"] - cal["mean_observed"]) < 0.05
    assert by_name["product"].ece == cal["ece"] and f"| {cal['ece']:.4f} |" in (folder / "table.md").read_text()
    assert (folder / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    # New products: the synthetic launches' complements are found (the data file holds none new: no cases).
    launches = json.loads((folder / "new_products.json").read_text())["launches"]
    assert launches["placed"] == launches["launches"] and launches["complements_found"] > 0.5


def test_the_parquet_the_spark_engine_is_evaluated_on_carries_the_items_prices(tiny_csv, tmp_path):
    """make evaluate ENGINE=spark trains on write_parquet's file: read back, it gives the same items, baskets and
    prices (the re-ranker's price feature), not a file without UnitPrice."""
    pytest.importorskip("pyarrow")
    from recommender.tools.product_evaluation import write_parquet

    tx = load_transactions(tiny_csv)
    write_parquet(tx, tmp_path / "train.parquet")
    back = load_transactions(tmp_path / "train.parquet")
    assert back.basket_ids == tx.basket_ids and sorted(back.item_codes) == sorted(tx.item_codes)
    position = {code: i for i, code in enumerate(back.item_codes)}
    assert back.item_prices is not None
    assert np.array_equal(back.item_prices[[position[c] for c in tx.item_codes]], tx.item_prices, equal_nan=True)
