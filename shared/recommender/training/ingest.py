"""Reading purchase history (.csv, .csv.gz, .xlsx, .parquet, a folder of parts, s3://) and cleaning it into baskets:
load_transactions, over training/readers.py (the file formats) and training/cleaning.py (the rules, shared with the
Spark engine), and what a trainer does with the baskets (select, renumber, report).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from recommender.core.errors import DataFileError
from recommender.training.cleaning import (  # noqa: F401 (re-exported: other modules and tests name them here)
    NO_TIME,
    REASONS,
    CleanChunk,
    Codebook,
    Coded,
    CodedChunk,
    as_frame,
    clean_chunk,
    clean_code,
)
from recommender.training.readers import (  # noqa: F401 (re-exported)
    OPTIONAL,
    REQUIRED,
    SUPPORTED,
    _not_encoded,
    read_chunks,
    read_part,
    xlsx_rows,
)
from recommender.training.xlsx import cell_text  # noqa: F401 (re-exported)


@dataclass
class CleaningReport:
    """What reading and cleaning did, stage by stage."""

    rows_read: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    rows_kept: int = 0
    baskets: int = 0
    items: int = 0
    customers: int = 0
    guest_baskets: int = 0


@dataclass
class Transactions:
    """Cleaned purchase history: one (basket, item) pair per distinct item in an invoice."""

    item_codes: list[str]
    descriptions: list[str]
    pair_basket: np.ndarray  # int32, basket index of each pair
    pair_item: np.ndarray  # int32, item index of each pair
    basket_ids: list[str]  # InvoiceNo of each basket
    basket_time: np.ndarray  # datetime64[s] per basket (NaT when the file has no dates)
    basket_customer: np.ndarray  # int32 per basket, -1 for guest checkouts
    report: CleaningReport
    # float64 per item: its most recent positive UnitPrice (latest dated line, then file order); NaN when the file
    # has no UnitPrice column or the item none. The default price of the product feed.
    item_prices: np.ndarray | None = None


def check_cleaned(report: CleaningReport, name: str) -> None:
    """DataFileError when a file had no data rows or nothing survived cleaning (same words for both engines)."""
    if report.rows_read == 0:
        raise DataFileError(f"{name} has a header but no data rows")
    if report.rows_kept == 0:
        raise DataFileError(f"nothing left in {name} after cleaning ({_dropped_text(report)})")


def source_name(path: str | Path) -> str:
    """What messages call an input: its file or folder name (the last part of an s3:// key)."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def load_transactions(
    path: str | Path, on_rows: Callable[[int], None] = lambda _n: None, encoding: str = "utf-8"
) -> Transactions:
    """Read and clean a purchase-history file into baskets; see docs/training-data.md for the rules."""
    report = CleaningReport()
    invoices, items, customers = Codebook(), Codebook(), Codebook()
    pair_basket, pair_item, time_parts, cust_parts = [], [], [], []
    last_desc: dict[int, tuple[int, int, str]] = {}
    last_price: dict[int, tuple[int, int, str]] = {}
    priced = False
    seen_rows = 0
    for chunk in read_chunks(path, encoding):
        clean = clean_chunk(chunk)
        priced = priced or clean.price_coded is not None  # (clean.price would build every row's text)
        report.rows_read += clean.rows_read
        for reason, n in clean.dropped.items():
            report.dropped[reason] += n
        on_rows(clean.rows_read)
        if not len(clean):
            continue
        basket_idx = invoices.encode_coded(clean.invoice_coded)
        item_idx = items.encode_coded(clean.code_coded)
        pair_basket.append(basket_idx)
        pair_item.append(item_idx)
        time_parts.append((basket_idx, clean.time))
        guest = clean.customer_coded.per_row(lambda v: v == "")
        cust_idx = np.full(len(clean), -1, dtype=np.int32)
        if (~guest).any():
            cust_idx[~guest] = customers.encode_coded(clean.customer_coded.rows(~guest))
        cust_parts.append((basket_idx, cust_idx))
        _update_latest(last_desc, item_idx, clean.time, clean.description_coded, seen_rows)
        if clean.price_coded is not None:
            _update_latest(last_price, item_idx, clean.time, clean.price_coded, seen_rows)
        seen_rows += len(clean)
    report.rows_kept = report.rows_read - sum(report.dropped.values())
    check_cleaned(report, source_name(path))

    n_baskets = len(invoices.values)
    # A basket's time is its earliest dated line.
    never = np.iinfo(np.int64).max
    earliest = np.full(n_baskets, never, dtype=np.int64)
    for idx, when in time_parts:
        stamps = np.where(when == NO_TIME, never, when)
        np.minimum.at(earliest, idx, stamps)
    basket_time = earliest.view("datetime64[s]")
    basket_time[earliest == never] = np.datetime64("NaT")
    basket_customer = np.full(n_baskets, -1, dtype=np.int32)
    for idx, cust in cust_parts:
        basket_customer[idx[cust >= 0]] = cust[cust >= 0]

    # Sorted and deduplicated by hand: numpy 2's np.unique hashes large int64 keys, ten times slower than sorting.
    pairs = np.sort(np.concatenate(pair_basket).astype(np.int64) << 32 | np.concatenate(pair_item).astype(np.int64))
    pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
    report.baskets = n_baskets
    report.items = len(items.values)
    report.customers = len(customers.values)
    report.guest_baskets = int((basket_customer < 0).sum())
    descriptions = [last_desc[i][2] if i in last_desc else "" for i in range(len(items.values))]
    prices = np.full(len(items.values), np.nan)
    for i, (_t, _row, value) in last_price.items():
        prices[i] = float(value)
    return Transactions(
        item_codes=items.values,
        descriptions=descriptions,
        pair_basket=(pairs >> 32).astype(np.int32),
        pair_item=(pairs & 0xFFFFFFFF).astype(np.int32),
        basket_ids=invoices.values,
        basket_time=basket_time,
        basket_customer=basket_customer,
        report=report,
        item_prices=prices if priced else None,
    )


def _update_latest(
    last: dict[int, tuple[int, int, str]], item_idx: np.ndarray, when: np.ndarray, values: Coded, offset: int
) -> None:
    """Keep, per item, the value of its latest dated (then latest in file) line with a non-empty value;
    descriptions and unit prices (clean_chunk leaves a price empty unless it is a positive number)."""
    nonempty = np.flatnonzero(values.per_row(lambda v: v != ""))
    if not len(nonempty):
        return
    # NO_TIME is the smallest int64: undated lines lose to dated ones
    latest = nonempty[_latest_per_item(item_idx[nonempty], when[nonempty])]
    for item, t, row in zip(item_idx[latest].tolist(), when[latest].tolist(), latest.tolist()):
        prev = last.get(item)
        if prev is None or (t, row + offset) >= prev[:2]:
            last[item] = (t, row + offset, values.values[values.codes[row]])


def _latest_per_item(item: np.ndarray, when: np.ndarray) -> np.ndarray:
    """Per distinct item (ascending), the position of its line with the latest time, the last such line on a tie.

    A stable sort by item (a radix sort on 16 bits when the numbers fit: three times faster than sorting the
    three keys) keeps each item's lines in order, so the last line at its group's latest time is the one."""
    keys = item.astype(np.uint16) if len(item) and 0 <= item.min() and item.max() < 2**16 else item
    order = np.argsort(keys, kind="stable")
    item, when = item[order], when[order]
    starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(item)]))
    at_latest = when == np.maximum.reduceat(when, starts)[group]
    return order[np.maximum.reduceat(np.where(at_latest, np.arange(len(item)), -1), starts)]


def _dropped_text(report: CleaningReport) -> str:
    return ", ".join(f"{n:,} {reason}" for reason, n in report.dropped.items() if n) or "no rows dropped"


def describe_report(report: CleaningReport) -> list[str]:
    """The cleaning report as lines for the console."""
    return [
        f"rows read: {report.rows_read:,}",
        f"rows dropped: {_dropped_text(report)}",
        f"rows kept: {report.rows_kept:,}",
        f"baskets: {report.baskets:,} ({report.guest_baskets:,} without CustomerID, kept)",
        f"items: {report.items:,}",
        f"customers: {report.customers:,}",
    ]


def select_baskets(tx: Transactions, keep: np.ndarray) -> Transactions:
    """The transactions of the baskets where keep is True, with items renumbered to those still present."""
    basket_rows = np.flatnonzero(keep)
    new_basket = np.full(len(tx.basket_ids), -1, dtype=np.int64)
    new_basket[basket_rows] = np.arange(len(basket_rows))
    pair_keep = keep[tx.pair_basket]
    items_used = np.unique(tx.pair_item[pair_keep])
    new_item = np.full(len(tx.item_codes), -1, dtype=np.int64)
    new_item[items_used] = np.arange(len(items_used))
    report = CleaningReport(
        rows_read=tx.report.rows_read,
        dropped=dict(tx.report.dropped),
        rows_kept=tx.report.rows_kept,
        baskets=len(basket_rows),
        items=len(items_used),
        customers=len(np.unique(tx.basket_customer[basket_rows][tx.basket_customer[basket_rows] >= 0])),
        guest_baskets=int((tx.basket_customer[basket_rows] < 0).sum()),
    )
    return Transactions(
        item_codes=[tx.item_codes[i] for i in items_used],
        descriptions=[tx.descriptions[i] for i in items_used],
        pair_basket=new_basket[tx.pair_basket[pair_keep]].astype(np.int32),
        pair_item=new_item[tx.pair_item[pair_keep]].astype(np.int32),
        basket_ids=[tx.basket_ids[b] for b in basket_rows],
        basket_time=tx.basket_time[basket_rows],
        basket_customer=tx.basket_customer[basket_rows],
        report=report,
        item_prices=None if tx.item_prices is None else tx.item_prices[items_used],
    )


def reorder_items(tx: Transactions, order: np.ndarray) -> Transactions:
    """The same transactions with item order[k] renumbered k."""
    new_index = np.empty(len(order), dtype=np.int32)
    new_index[order] = np.arange(len(order), dtype=np.int32)
    return replace(
        tx,
        item_codes=[tx.item_codes[i] for i in order],
        descriptions=[tx.descriptions[i] for i in order],
        pair_item=new_index[tx.pair_item],
        item_prices=None if tx.item_prices is None else tx.item_prices[order],
    )
