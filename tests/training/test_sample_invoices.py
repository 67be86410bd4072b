"""Sample invoices kept with a model: real invoices of the training data, bounded in size, reproducible."""

import json

import numpy as np
import pandas as pd

from recommender.core import registry
from recommender.training.sample_invoices import MAX_ITEMS, MIN_ITEMS, draw


def test_samples_are_real_invoices_of_the_training_data(trained_folder, tiny_csv):
    from recommender.core.storage import LocalStorage

    storage = LocalStorage(trained_folder)
    version = registry.active_version(storage)
    manifest = registry.read_manifest(storage, version)
    assert registry.SAMPLES in manifest["artifacts"]  # checksummed like every artifact
    samples = json.loads(storage.read(registry.artifact_key(version, registry.SAMPLES)))["invoices"]
    rows = pd.read_csv(tiny_csv, dtype=str).apply(lambda column: column.str.strip())
    # the cleaned invoices: no returns, no service codes (POST, BANK CHARGES, ...)
    rows = rows[(rows["Quantity"].astype(int) > 0) & ~rows["StockCode"].str.fullmatch(r"[A-Za-z ]+")]
    invoices = rows.groupby("InvoiceNo")["StockCode"].agg(lambda codes: sorted(set(codes)))
    dates = rows.groupby("InvoiceNo")["InvoiceDate"].first()
    assert 10 < len(samples) <= 200 and len({s["invoice"] for s in samples}) == len(samples)
    for sample in samples:
        assert MIN_ITEMS <= len(sample["items"]) <= MAX_ITEMS
        assert sample["items"] == invoices[sample["invoice"]]
        assert dates[sample["invoice"]].startswith(sample["date"])


def test_sampling_is_seeded_and_bounded():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 30, size=500)
    pair_basket = np.repeat(np.arange(500), sizes).astype(np.int32)
    pair_item = np.concatenate([rng.choice(100, size=s, replace=False) for s in sizes]).astype(np.int32)
    ids = [f"INV{b}" for b in range(500)]
    codes = [f"C{i:03d}" for i in range(100)]
    first = draw(ids, pair_basket, pair_item, codes, count=50, seed=3)
    assert first == draw(ids, pair_basket, pair_item, codes, count=50, seed=3)
    assert first != draw(ids, pair_basket, pair_item, codes, count=50, seed=4)
    assert len(first) == 50 and all(s["date"] is None for s in first)
    for s in first:
        b = int(s["invoice"][3:])
        assert s["items"] == sorted(codes[i] for i in pair_item[pair_basket == b]) and 2 <= len(s["items"]) <= 20
    assert [s["invoice"] for s in first] == sorted((s["invoice"] for s in first), key=lambda i: int(i[3:]))


def test_tiny_data_without_eligible_invoices_still_gives_samples():
    samples = draw(["A", "B"], np.array([0, 1]), np.array([0, 1]), ["X", "Y"])
    assert [s["items"] for s in samples] == [["X"], ["Y"]]
