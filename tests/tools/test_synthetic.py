"""Tests of the synthetic transactions generator: format, dirt, statistics, ground truth, determinism."""

from __future__ import annotations

import gzip
import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recommender.core.errors import InvalidInput
from recommender.tools import synthetic
from recommender.tools.synthetic import (
    DEFAULT,
    SCALE,
    TINY,
    GenerationSummary,
    SyntheticSpec,
    complements,
    generate_frame,
    preset,
    product_range,
    write_csv,
)

SERVICES = {"POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE"}
TEXT_COLUMNS = {
    "InvoiceNo": str,
    "StockCode": str,
    "Description": str,
    "InvoiceDate": str,
    "CustomerID": str,
    "Country": str,
}


def read(path) -> pd.DataFrame:
    """Read a generated file the way a loader that keeps IDs as text would."""
    return pd.read_csv(path, dtype=TEXT_COLUMNS)


def clean(frame: pd.DataFrame) -> pd.DataFrame:
    """Purchase lines of real products only."""
    keep = (
        ~frame.InvoiceNo.str.startswith("C")
        & (frame.Quantity > 0)
        & frame.Description.notna()
        & frame.StockCode.str.strip().str.fullmatch(r"\d{5}[A-Z]?")
    )
    return frame[keep].assign(StockCode=frame.StockCode.str.strip())


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_frame(DEFAULT)


@pytest.fixture(scope="module")
def baskets(frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
    """Invoice-by-product incidence matrix of the clean purchase lines, and the column of each code."""
    lines = clean(frame)[["InvoiceNo", "StockCode"]].drop_duplicates()
    codes = {c: i for i, c in enumerate(product_range(DEFAULT).StockCode)}
    rows = lines.InvoiceNo.astype("category").cat.codes.to_numpy()
    matrix = np.zeros((rows.max() + 1, len(codes)), bool)
    matrix[rows, lines.StockCode.map(codes).to_numpy()] = True
    return matrix, codes


def test_same_spec_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    first, second, other = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz", tmp_path / "c.csv.gz"
    write_csv(TINY, first)
    write_csv(TINY, second)
    write_csv(replace(TINY, seed=1), other)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_gz_round_trip_equals_frame_and_summary_counts_it(tmp_path, monkeypatch):
    # Small blocks so the file is streamed in several pieces, as a large spec is.
    for module in (synthetic.plan, synthetic.rows):  # the modules that cut the invoices into blocks
        monkeypatch.setattr(module, "BLOCK", 64)
    path = tmp_path / "nested" / "tiny.csv.gz"
    summary = write_csv(TINY, path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert f.readline() == "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    written = read(path)
    pd.testing.assert_frame_equal(written, generate_frame(TINY))
    codes = written.StockCode.str.strip()
    assert summary == GenerationSummary(
        rows=len(written),
        invoices=written.InvoiceNo.nunique(),
        products=codes[codes.isin(set(product_range(TINY).StockCode))].nunique(),
        customers=written.CustomerID.nunique(),
        path=path,
    )
    assert not list(tmp_path.rglob("*.partial"))


def test_plain_csv_is_written_when_the_name_does_not_end_in_gz(tmp_path):
    path = tmp_path / "tiny.csv"
    write_csv(TINY, path)
    assert path.read_bytes().startswith(b"InvoiceNo,StockCode,")
    pd.testing.assert_frame_equal(read(path), generate_frame(TINY))


def test_columns_and_formats(frame):
    assert list(frame.columns) == list(synthetic.COLUMNS)
    assert frame.InvoiceNo.str.fullmatch(r"C?\d{6}").all()
    assert frame.InvoiceDate.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:00").all()
    assert frame.CustomerID.dropna().str.fullmatch(r"\d{5}").all()
    assert frame.Quantity.dtype == np.int64 and (frame.UnitPrice >= 0).all()
    assert set(frame.Country) >= {"United Kingdom", "Germany", "France"}
    codes = frame.StockCode.str.strip()
    products = codes[~codes.isin(SERVICES | {"C2"})]
    assert products.str.fullmatch(r"\d{5}[A-Z]?").all()
    assert 0.05 < products.str.fullmatch(r"\d{5}[A-Z]").mean() < 0.8  # some "85123A"-style codes
    # One customer (or none) per invoice; numbers increase with time.
    assert frame.groupby("InvoiceNo").CustomerID.nunique(dropna=False).max() == 1
    by_number = frame.drop_duplicates("InvoiceNo").assign(n=lambda f: f.InvoiceNo.str.lstrip("C").astype(int))
    assert by_number.n.is_unique and by_number.sort_values("n").InvoiceDate.is_monotonic_increasing


def test_dirty_rows_are_present(frame):
    cancelled = frame[frame.InvoiceNo.str.startswith("C")]
    assert cancelled.InvoiceNo.nunique() >= 10 and (cancelled.Quantity < 0).all()
    assert cancelled.CustomerID.notna().all()
    purchases = frame[~frame.InvoiceNo.str.startswith("C")]
    assert (purchases.Quantity <= 0).sum() >= 3
    assert SERVICES <= set(frame.StockCode)
    assert frame.Description.isna().sum() >= 3
    assert (frame.StockCode != frame.StockCode.str.strip()).sum() >= 3
    duplicated = purchases.duplicated(["InvoiceNo", "StockCode"]).mean()
    assert 0.04 < duplicated < 0.1


def test_tiny_has_every_kind_of_dirt_too():
    tiny = generate_frame(TINY)
    assert tiny.InvoiceNo.str.startswith("C").any()
    assert ((tiny.Quantity <= 0) & ~tiny.InvoiceNo.str.startswith("C")).any()
    assert SERVICES <= set(tiny.StockCode)
    assert tiny.Description.isna().any() and (tiny.StockCode != tiny.StockCode.str.strip()).any()


def test_clean_spec_has_no_dirt():
    data = generate_frame(replace(TINY, dirty=False, duplicate_share=0.0))
    assert not data.InvoiceNo.str.startswith("C").any() and (data.Quantity > 0).all()
    assert data.StockCode.str.fullmatch(r"\d{5}[A-Z]?").all() and data.Description.notna().all()
    assert not data.duplicated(["InvoiceNo", "StockCode"]).any()


def test_renamed_products_keep_their_latest_description(frame):
    lines = clean(frame)
    lines = lines[lines.Description.str.isupper()]  # adjustment notes like "damaged" are not names
    names = lines.groupby("StockCode").Description.nunique()
    renamed = names[names > 1].index
    assert len(renamed) >= 2
    latest = lines[lines.StockCode.isin(renamed)].sort_values("InvoiceDate").groupby("StockCode").Description.last()
    current = product_range(DEFAULT).set_index("StockCode").Description
    assert (latest == current[latest.index]).all()


def test_guest_share_is_about_what_was_asked(frame):
    guests = frame.groupby("InvoiceNo").CustomerID.first().isna().mean()
    assert 0.2 < guests < 0.3
    half = generate_frame(replace(TINY, guest_share=0.5)).groupby("InvoiceNo").CustomerID.first().isna().mean()
    assert 0.4 < half < 0.6


def test_basket_sizes_are_realistic(frame):
    sizes = clean(frame).groupby("InvoiceNo").StockCode.nunique()
    assert 8 <= sizes.median() <= 16
    assert 0.05 < (sizes == 1).mean() < 0.2
    assert sizes.max() > 4 * sizes.median()


def test_popularity_is_skewed(frame):
    counts = clean(frame).StockCode.value_counts()
    assert len(counts) >= 0.95 * DEFAULT.products
    assert counts.iloc[: len(counts) // 10].sum() / counts.sum() > 0.3


def test_dates_span_a_year_with_a_busy_last_month(frame):
    dates = pd.to_datetime(frame.drop_duplicates("InvoiceNo").InvoiceDate)
    assert (dates.max() - dates.min()).days >= 330
    last_month = (dates > dates.max() - pd.Timedelta(days=30)).mean()
    assert 0.08 < last_month < 0.3
    assert not (dates.dt.day_of_week == 5).any()  # the shop never invoices on Saturdays


def test_complement_pairs_co_occur_far_more_than_random_pairs(baskets):
    matrix, column = baskets
    counts = matrix.sum(axis=0)
    together = matrix.T.astype(np.float32) @ matrix.astype(np.float32)

    def conditional(pairs: list[tuple[int, int]]) -> float:
        a, b = np.array(pairs).T
        seen = counts[a] > 0
        return float((together[a[seen], b[seen]] / counts[a[seen]]).mean())

    truth = complements(DEFAULT)
    pairs = [(column[a], column[b]) for a, others in truth.items() for b in others]
    rng = random.Random(0)
    shuffled = [(rng.randrange(len(column)), rng.randrange(len(column))) for _ in pairs]
    assert conditional(pairs) > 4 * conditional(shuffled)


def test_a_teacup_basket_holds_its_saucer(baskets):
    matrix, column = baskets
    products = product_range(DEFAULT)
    tea = products[products.Family == 0].set_index("Item").StockCode  # families start with a tea set
    teacup, saucer = tea["TEACUP"], tea["SAUCER"]
    assert saucer in complements(DEFAULT)[teacup]
    with_cup = matrix[:, column[teacup]]
    assert with_cup.sum() >= 20
    assert matrix[with_cup, column[saucer]].mean() > 5 * matrix[:, column[saucer]].mean()


def test_customers_come_back_to_favourite_families(frame):
    products = product_range(DEFAULT)
    lines = clean(frame).merge(products[["StockCode", "Family"]], on="StockCode")
    lines = lines[(lines.Family >= 0) & lines.CustomerID.notna()]

    def top3_share(owner: pd.Series) -> float:
        per = lines.groupby(owner).Family.apply(lambda f: f.value_counts().iloc[:3].sum() / len(f))
        sizes = lines.groupby(owner).InvoiceNo.nunique()
        return float(per[sizes[sizes >= 3].index].mean())

    invoice_owner = lines.drop_duplicates("InvoiceNo").set_index("InvoiceNo").CustomerID
    shuffled = pd.Series(np.random.default_rng(0).permutation(invoice_owner.to_numpy()), index=invoice_owner.index)
    assert top3_share(lines.CustomerID) > top3_share(lines.InvoiceNo.map(shuffled)) + 0.1


def test_mid_size_spec_is_respected(tmp_path):
    spec = SyntheticSpec(invoices=4_000, products=3_000, customers=1_500, seed=7, basket_median=8)
    summary = write_csv(spec, tmp_path / "mid.csv.gz")
    data = read(summary.path)
    assert summary.invoices == data.InvoiceNo.nunique() == 4_000
    assert summary.rows == len(data)
    assert 0.8 * spec.products <= summary.products <= spec.products
    assert summary.customers == data.CustomerID.nunique() <= spec.customers
    products = product_range(spec)
    assert len(products) == spec.products and products.StockCode.is_unique and products.Description.is_unique
    assert products.Family.max() + 1 >= spec.products / 8  # many small families, not a few big ones
    assert set(complements(spec)) == set(products.StockCode)


def test_a_large_product_range_stays_distinct_and_structured():
    products = product_range(replace(SCALE, products=40_000))
    assert products.StockCode.is_unique and products.Description.is_unique
    assert products.StockCode.str.fullmatch(r"\d{5}[A-Z]?").all()
    assert products.Family.max() + 1 > 5_000


def test_complements_are_symmetric_and_within_the_product_range():
    truth = complements(TINY)
    assert set(truth) == set(product_range(TINY).StockCode)
    assert all(code not in others for code, others in truth.items())
    assert all(code in truth[other] for code, others in truth.items() for other in others)


def test_more_customers_than_five_digits_get_longer_distinct_ids():
    frame = generate_frame(replace(TINY, invoices=2_000, customers=100_000, guest_share=0.0))
    ids = frame.CustomerID.dropna()
    assert ids.str.fullmatch(r"\d{5,6}").all() and (ids.str.len() == 6).any()
    assert frame.drop_duplicates("InvoiceNo").CustomerID.nunique() > 1_500  # few repeat visits among 100k


def test_presets():
    assert (TINY.invoices, TINY.products) == (300, 60)
    assert (SCALE.invoices, SCALE.products) == (1_000_000, 100_000)
    assert preset("tiny") == TINY and preset("default", seed=3) == replace(DEFAULT, seed=3)
    with pytest.raises(InvalidInput, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"invoices": 0}, "invoices"),
        ({"products": 1}, "products"),
        ({"customers": 0}, "customers"),
        ({"guest_share": 1.5}, "guest_share"),
        ({"start": "yesterday"}, "start"),
    ],
)
def test_bad_specs_are_refused_with_a_message_naming_the_field(changes, field):
    with pytest.raises(InvalidInput, match=field):
        replace(TINY, **changes)
