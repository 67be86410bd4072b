"""The Spark engine's per-part reduction (distributed_read.part_partials), without Spark: what one part's executor
sends for its pairs, baskets, items and customers, against rows whose answers are known."""

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyarrow")

from recommender.training import distributed_read as dr  # noqa: E402
from recommender.training.distributed_blocks import decode  # noqa: E402

COLUMNS = ("InvoiceNo", "StockCode", "Description", "CustomerID", "Quantity", "InvoiceDate", "UnitPrice")


def chunk(*rows):
    return pd.DataFrame([dict(zip(COLUMNS, row)) for row in rows], columns=list(COLUMNS))


def partials(part, *chunks):
    import pyarrow as pa

    frame = pa.Table.from_batches(dr.part_partials(part, chunks)).to_pandas()
    return {kind: frame[frame["kind"] == kind].reset_index(drop=True) for kind in range(5)}


def test_a_part_is_reduced_to_its_pairs_baskets_items_and_counts():
    at = 3 << dr.PART_SHIFT  # part 3: positions carry the part in their high bits
    out = partials(
        3,
        chunk(
            ("1", "10A", "old mug", "", "1", "2011-01-02 10:00", "2.5"),  # row 0
            ("1", "20B", "plate", "17", "2", "", "0"),  # row 1: undated, price not positive
            ("C9", "10A", "x", "17", "1", "2011-01-01 09:00", "1"),  # dropped: cancelled
            ("1", "10A", "mug v2", "18", "1", "2011-01-01 08:00", ""),  # row 2: a duplicate pair, an earlier date
        ),
        chunk(
            ("2", "10A", "", "", "1", "2011-01-03 00:00", "3"),  # row 3 (second chunk): a guest basket
            ("2", "POST", "postage", "", "1", "2011-01-03 00:00", "1"),  # dropped: service code
        ),
    )
    counts = json.loads(out[dr.SUMMARY]["value"][0])
    assert counts == {"rows_read": 6, "dropped": [1, 0, 0, 1], "priced": True}
    assert len(out[dr.BLOCK]) == 1  # the pairs: one block of numbers, not a row each
    block = decode(out[dr.BLOCK]["block"][0])
    basket = np.repeat(np.arange(len(block["invoices"])), np.diff(block["indptr"]))
    pairs = pd.DataFrame(
        {"invoice": block["invoices"][basket], "code": block["codes"][block["items"]], "at": block["at"]}
    ).sort_values(["invoice", "code"])
    assert list(zip(pairs["invoice"], pairs["code"], pairs["at"] - at)) == [
        ("1", "10A", 0),
        ("1", "20B", 1),
        ("2", "10A", 3),
    ]
    baskets = out[dr.BASKET].set_index("invoice")
    assert list(baskets.index) == ["1", "2"]
    assert list(baskets["at"] - at) == [0, 3] and list(baskets["size"]) == [2, 1]
    assert pd.Timestamp(baskets["time"]["1"], unit="s") == pd.Timestamp("2011-01-01 08:00")  # earliest dated line
    assert baskets["value"]["1"] == "18" and baskets["value_at"]["1"] - at == 2  # the last line naming a customer
    assert pd.isna(baskets["value"]["2"]) and pd.isna(baskets["value_at"]["2"])
    items = out[dr.ITEM].set_index("code")
    # the latest dated line wins over a later undated or earlier-dated one; an empty description or price never
    assert items["value"]["10A"] == "old mug" and items["price"]["10A"] == "3"
    assert items["value"]["20B"] == "plate" and pd.isna(items["price"]["20B"])
    assert sorted(out[dr.CUSTOMER]["value"]) == ["17", "18"]
    # each basket's customer in the block: the last line naming one, as in the basket's row; none for a guest
    assert [block["customers"][c] if c >= 0 else None for c in block["basket_customer"]] == ["18", None]


def test_a_part_with_nothing_kept_sends_its_counts_alone():
    out = partials(0, chunk(("C1", "10A", "x", "", "1", "", "1")))
    assert json.loads(out[dr.SUMMARY]["value"][0])["dropped"] == [1, 0, 0, 0]
    assert all(len(out[kind]) == 0 for kind in (dr.BLOCK, dr.BASKET, dr.ITEM, dr.CUSTOMER))


def test_a_big_part_sends_its_pairs_in_several_blocks_of_whole_baskets():
    import pyarrow as pa

    rows = [
        (str(b), f"I{i}", "x", str(b % 2), "1", "2011-01-01 10:00", "1")
        for b, n in ((1, 2), (2, 1), (3, 3))
        for i in range(n)
    ]
    frame = pa.Table.from_batches(dr.part_partials(0, [chunk(*rows)], block_pairs=2)).to_pandas()
    blocks = [decode(b) for b in frame[frame["kind"] == dr.BLOCK]["block"]]
    # a block starts with the basket holding pair 0, 2, 4 (of 6): whole baskets, in order
    assert [list(b["invoices"]) for b in blocks] == [["1"], ["2"], ["3"]]
    pairs = sorted(
        (b["invoices"][basket], b["codes"][item], b["customers"][b["basket_customer"][basket]])
        for b in blocks
        for basket, item in zip(np.repeat(np.arange(len(b["invoices"])), np.diff(b["indptr"])), b["items"])
    )
    assert pairs == [
        ("1", "I0", "1"),
        ("1", "I1", "1"),
        ("2", "I0", "0"),
        ("3", "I0", "1"),
        ("3", "I1", "1"),
        ("3", "I2", "1"),
    ]
