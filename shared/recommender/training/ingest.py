"""Reading a purchase-history file (.csv, .csv.gz, .xlsx) and cleaning it into baskets of item ids."""

from __future__ import annotations

import codecs
import gzip
import re
import zipfile
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from recommender.core.errors import DataFileError

REQUIRED = ("InvoiceNo", "StockCode", "Description", "CustomerID")
OPTIONAL = ("Quantity", "InvoiceDate", "UnitPrice")
# Header spellings accepted for each column, compared without case, spaces or underscores (the "Online Retail II"
# export says "Invoice" and "Customer ID").
ALIASES = {"InvoiceNo": {"invoiceno", "invoice", "invoicenumber"}, "CustomerID": {"customerid", "customer"}}
SUPPORTED = (".csv", ".csv.gz", ".xlsx")
CHUNK_ROWS = 1_000_000
# Service lines (postage, fees, manual adjustments) are all letters: "POST", "DOT", "BANK CHARGES".
SERVICE_CODE = re.compile(r"^[A-Za-z ]+$")
# Excel stores digit-only codes as numbers; a reader may give them back as "85123.0".
FLOAT_INTEGER = re.compile(r"^(\d+)\.0+$")


@dataclass
class CleaningReport:
    """What reading and cleaning did, stage by stage."""

    rows_read: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {
        "cancelled invoice": 0, "quantity <= 0": 0, "empty invoice or code": 0, "service code": 0})
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
    pair_basket: np.ndarray        # int32, basket index of each pair
    pair_item: np.ndarray          # int32, item index of each pair
    basket_ids: list[str]          # InvoiceNo of each basket
    basket_time: np.ndarray        # datetime64[s] per basket (NaT when the file has no dates)
    basket_customer: np.ndarray    # int32 per basket, -1 for guest checkouts
    report: CleaningReport
    # float64 per item: its most recent positive UnitPrice (latest dated line, then file order); NaN when the file
    # has no UnitPrice column or the item none. The default price of the product feed.
    item_prices: np.ndarray | None = None


def file_kind(path: Path) -> str:
    """'.csv', '.csv.gz' or '.xlsx' from the file name; DataFileError for anything else."""
    name = path.name.lower()
    for suffix in (".csv.gz", ".csv", ".xlsx"):
        if name.endswith(suffix):
            return suffix
    kind = "".join(path.suffixes) or "(none)"
    raise DataFileError(f"unsupported file type {kind} for {path.name}: use .csv, .csv.gz or .xlsx")


def _column_map(columns: list, path: Path) -> dict[str, object]:
    """For each column the product reads, the file's header naming it; DataFileError when a required one is missing."""
    def norm(name: object) -> str:
        return re.sub(r"[\s_]", "", str(name)).lower()

    found: dict[str, object] = {}
    for wanted in (*REQUIRED, *OPTIONAL):
        accepted = ALIASES.get(wanted, set()) | {wanted.lower()}
        for column in columns:
            if norm(column) in accepted:
                found[wanted] = column
                break
    missing = [c for c in REQUIRED if c not in found]
    if not missing:
        return found
    names = [str(c).strip() for c in columns]
    if len(names) == 1 and ";" in names[0]:
        raise DataFileError(f"{path.name} looks semicolon-separated (header {names[0]!r}); save it with commas")
    raise DataFileError(f"{path.name} lacks required column(s) {', '.join(missing)}; found: {', '.join(names) or 'none'}")


def _csv_chunks(path: Path, kind: str, encoding: str = "utf-8") -> Iterator[pd.DataFrame]:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataFileError(f"unknown encoding ENCODING={encoding!r}: use e.g. utf-8, latin-1 or cp1252") from None
    try:
        header = pd.read_csv(path, nrows=0, encoding=encoding)
    except pd.errors.EmptyDataError:
        raise DataFileError(f"{path.name} is empty") from None
    except UnicodeDecodeError:
        raise _not_encoded(path, kind, encoding) from None
    except (gzip.BadGzipFile, EOFError, OSError, pd.errors.ParserError, ValueError) as err:
        raise DataFileError(f"cannot read {path.name} as {kind}: {err}") from None
    columns = _column_map(list(header.columns), path)
    rename = {original: wanted for wanted, original in columns.items()}
    try:
        # Strict decoding: a file in another encoding is refused, never read into mangled text.
        reader = pd.read_csv(path, usecols=list(rename), dtype=str, keep_default_na=False,
                             chunksize=CHUNK_ROWS, encoding=encoding)
        for chunk in reader:
            yield chunk.rename(columns=rename)
    except UnicodeDecodeError:
        raise _not_encoded(path, kind, encoding) from None
    except (gzip.BadGzipFile, EOFError, zipfile.BadZipFile, OSError,
            pd.errors.ParserError, ValueError) as err:
        raise DataFileError(f"cannot read {path.name} as {kind}: {err}") from None


def _not_encoded(path: Path, kind: str, encoding: str) -> DataFileError:
    """The error for a file that is not text in `encoding`, naming the first line that is not and how to go on."""
    decoder = codecs.getincrementaldecoder(encoding)()
    where = ""
    with (gzip.open(path, "rb") if kind == ".csv.gz" else open(path, "rb")) as f:
        head = f.read(4096)
        if head.startswith(b"PK\x03\x04") or b"\x00" in head:
            return DataFileError(f"cannot read {path.name} as {kind}: it is binary, not {encoding} text (a zip or "
                                 f"xlsx renamed? UTF-16 text needs ENCODING=utf-16)")
        f.seek(0)
        for number, line in enumerate(f, 1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as err:
                where = f" (line {number}: byte {line[err.start:err.end].hex(' ')})"
                break
    return DataFileError(f"{path.name} is not {encoding} text{where}: save it as UTF-8, or give its encoding, "
                         f"e.g. ENCODING=cp1252 (Windows, Excel) or ENCODING=latin-1")


def _xlsx_rows(path: Path) -> list[list]:
    """The first sheet's cells as Python values (python-calamine: several times faster than openpyxl)."""
    try:
        from python_calamine import CalamineWorkbook
    except ImportError:  # the slow path still works without the Rust reader
        return pd.read_excel(path, sheet_name=0, engine="openpyxl", header=None, dtype=object).values.tolist()
    workbook = CalamineWorkbook.from_path(str(path))
    if not workbook.sheet_names:
        raise DataFileError(f"{path.name} has no worksheet")
    return workbook.get_sheet_by_index(0).to_python(skip_empty_area=False)


def _cell_text(value: object) -> str:
    """A cell as the csv export would write it: 85123.0 -> "85123", a date -> "2010-12-01 08:26:00"."""
    if value is None or value != value:  # None, or NaN for an empty cell
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).strip()


def xlsx_rows(path: Path) -> list[list]:
    """The first sheet's rows as Python values, without the trailing empty rows of its used range;
    DataFileError for a damaged or empty workbook."""
    try:
        rows = _xlsx_rows(path)
    except DataFileError:
        raise
    except Exception as err:  # calamine and zipfile raise their own types for damaged files
        raise DataFileError(f"cannot read {path.name} as .xlsx: {type(err).__name__}: {err}") from None
    while rows and all(cell in (None, "") for cell in rows[-1]):
        rows.pop()
    if not rows:
        raise DataFileError(f"{path.name} is empty")
    return rows


def _xlsx_frame(path: Path) -> pd.DataFrame:
    rows = xlsx_rows(path)
    header = [_cell_text(cell) for cell in rows[0]]
    columns = _column_map(header, path)
    cells = pd.DataFrame(rows[1:], columns=range(len(header)), dtype=object)  # pads short rows with None
    frame = {}
    for name, original in columns.items():
        values = cells[header.index(original)]
        # Text conversion runs once per distinct value, not per cell.
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        frame[name] = np.array([_cell_text(u) for u in uniques], dtype=object)[codes] if len(values) else []
    return pd.DataFrame(frame, columns=list(columns))


def read_chunks(path: str | Path, encoding: str = "utf-8") -> Iterator[pd.DataFrame]:
    """The raw rows of the file, as text columns, in chunks; DataFileError when the file cannot be used (a csv
    that is not text in `encoding` included)."""
    path = Path(path)
    kind = file_kind(path)
    if not path.exists():
        raise DataFileError(f"file not found: {path}")
    if not path.is_file():
        raise DataFileError(f"not a file: {path}")
    if kind == ".xlsx":
        yield _xlsx_frame(path)
    else:
        yield from _csv_chunks(path, kind, encoding)


class _Codebook:
    """Stable integer ids for strings, assigned in order of first appearance across chunks."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.values: list[str] = []

    def encode(self, values: list[str], rows: np.ndarray) -> np.ndarray:
        """The id of values[r] for each r in rows; only values that rows use get an id."""
        out = np.full(len(values), -1, dtype=np.int32)
        for j in np.flatnonzero(np.bincount(rows, minlength=len(values))):  # used values, in order
            value = values[j]
            idx = self.ids.get(value)
            if idx is None:
                idx = self.ids[value] = len(self.values)
                self.values.append(value)
            out[j] = idx
        return out[rows]


def _factorize(column: pd.Series, clean: Callable[[str], str] = str.strip) -> tuple[np.ndarray, list[str]]:
    """Row codes and cleaned distinct values: string work runs once per distinct value, not per row."""
    codes, uniques = pd.factorize(column, sort=False)
    return codes, [clean(str(u)) for u in uniques]


def _clean_code(value: str) -> str:
    value = value.strip()
    match = FLOAT_INTEGER.match(value)
    return match.group(1) if match else value


def load_transactions(path: str | Path, on_rows: Callable[[int], None] = lambda _n: None,
                      encoding: str = "utf-8") -> Transactions:
    """Read and clean a purchase-history file into baskets; see README "Input file" for the rules."""
    report = CleaningReport()
    invoices, items, customers = _Codebook(), _Codebook(), _Codebook()
    pair_basket, pair_item, time_parts, cust_parts = [], [], [], []
    last_desc: dict[int, tuple[int, int, str]] = {}
    last_price: dict[int, tuple[int, int, str]] = {}
    seen_rows = 0
    columns_seen: set[str] = set()
    for chunk in read_chunks(path, encoding):
        columns_seen.update(chunk.columns)
        report.rows_read += len(chunk)
        inv_rows, inv_values = _factorize(chunk["InvoiceNo"])
        code_rows, code_values = _factorize(chunk["StockCode"], _clean_code)
        keep = np.ones(len(chunk), dtype=bool)

        def drop(mask: np.ndarray, reason: str) -> None:
            newly = mask & keep
            report.dropped[reason] += int(newly.sum())
            keep[newly] = False

        drop(np.array([v.upper().startswith("C") for v in inv_values], dtype=bool)[inv_rows], "cancelled invoice")
        if "Quantity" in chunk:
            qty = pd.to_numeric(chunk["Quantity"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            drop(~(qty > 0), "quantity <= 0")
        empty = (np.array([v == "" for v in inv_values], dtype=bool)[inv_rows]
                 | np.array([v == "" for v in code_values], dtype=bool)[code_rows])
        drop(empty, "empty invoice or code")
        service = np.array([bool(SERVICE_CODE.match(v)) for v in code_values], dtype=bool)
        drop(service[code_rows], "service code")
        on_rows(len(chunk))
        if not keep.any():
            continue
        basket_idx = invoices.encode(inv_values, inv_rows[keep])
        item_idx = items.encode(code_values, code_rows[keep])
        pair_basket.append(basket_idx)
        pair_item.append(item_idx)
        kept = chunk[keep]
        if "InvoiceDate" in kept:
            date_rows, date_values = _factorize(kept["InvoiceDate"])
            stamps = pd.to_datetime(pd.Series(date_values, dtype=object), errors="coerce", format="mixed")
            when = stamps.to_numpy("datetime64[s]")[date_rows]
        else:
            when = np.full(len(kept), np.datetime64("NaT"), dtype="datetime64[s]")
        time_parts.append((basket_idx, when))
        cust_rows, cust_values = _factorize(kept["CustomerID"], _clean_code)
        guest = np.array([v == "" for v in cust_values], dtype=bool)[cust_rows]
        cust_idx = np.full(len(kept), -1, dtype=np.int32)
        cust_idx[~guest] = customers.encode(cust_values, cust_rows[~guest])
        cust_parts.append((basket_idx, cust_idx))
        desc_rows, desc_values = _factorize(kept["Description"])
        _update_latest(last_desc, item_idx, when, desc_rows, desc_values, seen_rows)
        if "UnitPrice" in kept:
            price_rows, price_values = _factorize(kept["UnitPrice"])
            _update_latest(last_price, item_idx, when, price_rows, price_values, seen_rows, _positive_number)
        seen_rows += len(kept)
    report.rows_kept = report.rows_read - sum(report.dropped.values())
    if report.rows_read == 0:
        raise DataFileError(f"{Path(path).name} has a header but no data rows")
    if report.rows_kept == 0:
        raise DataFileError(f"nothing left in {Path(path).name} after cleaning ({_dropped_text(report)})")

    n_baskets = len(invoices.values)
    # A basket's time is its earliest dated line.
    never = np.iinfo(np.int64).max
    earliest = np.full(n_baskets, never, dtype=np.int64)
    for idx, when in time_parts:
        stamps = when.view("int64").copy()
        stamps[np.isnat(when)] = never
        np.minimum.at(earliest, idx, stamps)
    basket_time = earliest.view("datetime64[s]")
    basket_time[earliest == never] = np.datetime64("NaT")
    basket_customer = np.full(n_baskets, -1, dtype=np.int32)
    for idx, cust in cust_parts:
        basket_customer[idx[cust >= 0]] = cust[cust >= 0]

    pairs = np.unique(np.concatenate(pair_basket).astype(np.int64) << 32 | np.concatenate(pair_item).astype(np.int64))
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
        item_prices=prices if "UnitPrice" in columns_seen else None,
    )


def _positive_number(value: str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return False


def _update_latest(last: dict[int, tuple[int, int, str]], item_idx: np.ndarray, when: np.ndarray,
                   value_rows: np.ndarray, values: list[str], offset: int,
                   usable: Callable[[str], bool] = lambda v: v != "") -> None:
    """Keep, per item, the value of its latest dated (then latest in file) line whose value is usable (by default:
    non-empty); descriptions and unit prices."""
    nonempty = np.flatnonzero(np.array([usable(v) for v in values], dtype=bool)[value_rows])
    if not len(nonempty):
        return
    lines = pd.DataFrame({
        "item": item_idx[nonempty],
        "t": when[nonempty].view("int64"),  # NaT is the smallest int64: undated lines lose to dated ones
        "row": nonempty,
    })
    latest = lines.sort_values(["item", "t", "row"]).drop_duplicates("item", keep="last")
    for item, t, row in latest.itertuples(index=False):
        prev = last.get(item)
        if prev is None or (t, row + offset) >= prev[:2]:
            last[item] = (t, row + offset, values[value_rows[row]])


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
    report = CleaningReport(rows_read=tx.report.rows_read, dropped=dict(tx.report.dropped),
                            rows_kept=tx.report.rows_kept, baskets=len(basket_rows), items=len(items_used),
                            customers=len(np.unique(tx.basket_customer[basket_rows][tx.basket_customer[basket_rows] >= 0])),
                            guest_baskets=int((tx.basket_customer[basket_rows] < 0).sum()))
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
    return replace(tx, item_codes=[tx.item_codes[i] for i in order], descriptions=[tx.descriptions[i] for i in order],
                   pair_item=new_index[tx.pair_item],
                   item_prices=None if tx.item_prices is None else tx.item_prices[order])
