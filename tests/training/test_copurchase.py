"""No co-purchase signal: refused in one line, the active model stays; thin signal: a warning with the figures;
items with nothing learned: popular items, flagged fallback."""

import numpy as np
import pytest
import scipy.sparse as sp

from recommender.core import registry
from recommender.core.storage import LocalStorage
from recommender.serving.merchandising import Options
from recommender.serving.model import load_model
from recommender.training import copurchase
from recommender.training.pipeline import train

HEADER = "InvoiceNo,StockCode,Description,CustomerID\n"


def singles_csv(path, customers=False):
    """300 invoices of one product each (40 products); customers, when asked, come back for the same product."""
    lines = [f"{500 + b},{10000 + b % 40},item {b % 40},{(12000 + b % 40) if customers else ''}\n" for b in range(300)]
    path.write_text(HEADER + "".join(lines))
    return path


def thin_csv(path):
    """The same, plus a product of 5 pairs with every 12th invoice: a third of the items were bought together."""
    lines = []
    for b in range(300):
        lines.append(f"{500 + b},{10000 + b % 40},item {b % 40},\n")
        if b % 12 == 0:
            lines.append(f"{500 + b},{20000 + b % 5},pair {b % 5},\n")
    path.write_text(HEADER + "".join(lines))
    return path


def test_measure_counts_baskets_and_customer_histories():
    # Rows: {0}, {1, 2}, {3}, a customer's history {3, 4}; item 5 never appears.
    rows = sp.csr_matrix((np.ones(6), ([0, 1, 1, 2, 3, 3], [0, 1, 2, 3, 3, 4])), shape=(4, 6))
    signal = copurchase.measure(rows.indptr, rows.indices, 6)
    assert signal == copurchase.Signal(rows=4, rows_with_two=2, items=6, items_together=4)
    assert not signal.thin
    assert copurchase.measure(rows[[0, 2]].indptr, rows[[0, 2]].indices, 6).rows_with_two == 0


@pytest.mark.parametrize("customers", [False, True])
def test_no_signal_is_one_line_and_the_active_model_stays(trained_storage, tmp_path, capsys, customers):
    from recommender import cli

    before = registry.active_version(trained_storage)
    path = singles_csv(tmp_path / "singles.csv", customers)
    assert cli.main(["train", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no co-purchase signal: none of the 300 baskets")
    assert "the active model stays" in err[0] and "HOLDOUT=0" not in err[0]
    assert registry.active_version(trained_storage) == before
    assert len(registry.list_versions(trained_storage)) == 1


def test_no_signal_before_the_holdout_trains_unmeasured(tmp_path):
    # The only pairs are in the most recent baskets: the published model learns them; the model trained without
    # the held-out baskets has nothing to learn, so the training says it is not measured.
    lines = [f"{500 + b},{10000 + b % 40},item {b % 40},\n" for b in range(300)]
    lines += [f"{900 + b},{20000 + b % 5},pair,\n{900 + b},{20005 + b % 5},mate,\n" for b in range(20)]
    (tmp_path / "late.csv").write_text(HEADER + "".join(lines))
    said = []
    result = train(tmp_path / "late.csv", LocalStorage(tmp_path / "s"), progress=said.append)
    assert "evaluation" not in result.manifest and result.manifest["model"]["signal"]["rows_with_two"] == 20
    assert any(
        line.startswith("holdout: not measured: without the held-out baskets, no co-purchase signal") for line in said
    )


@pytest.fixture(scope="module")
def thin_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("thin")
    storage = LocalStorage(folder / "store")
    lines = []
    result = train(thin_csv(folder / "thin.csv"), storage, progress=lines.append)
    return load_model(storage, result.version), lines, result.manifest


def test_thin_signal_trains_with_a_warning_and_the_figures(thin_model):
    model, lines, manifest = thin_model
    (warning,) = [line for line in lines if line.startswith("warning:")]
    assert "thin co-purchase signal: only 15 of 45 items (33%) were ever bought with another one" in warning
    assert manifest["model"]["signal"]["items_together"] == 15


@pytest.mark.parametrize("options", [None, Options(explain=True)])
def test_items_with_nothing_learned_get_popular_items_flagged_fallback(thin_model, options):
    model, _, _ = thin_model
    items = model.items
    lonely = "10001"  # never in an invoice with a pair (those are items 10000, 10004, ..., 10036)
    assert lonely in items.index
    answer = model.recommend([lonely], 5, options)
    assert answer.fallback is True
    expected = [items.codes[i] for i in items.most_popular() if items.codes[i] != lonely][:5]
    assert [p.item.stock_code for p in answer.items] == expected
    scores = [p.score for p in answer.items]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    # An item bought with others still gets what goes with it.
    paired = model.recommend(["20000"], 5, options)
    assert paired.fallback is False and paired.items[0].score > 0
