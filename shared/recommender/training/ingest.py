"""Reading purchase history (.csv, .csv.gz, .xlsx, .parquet, a folder of parts, s3://) and cleaning it into baskets.

The cleaning rules live in one function, clean_chunk, which both engines apply: the single-machine trainer to each
chunk it reads, Spark to each part on its executors (training/distributed.py), so both drop the same rows for the
same reasons and report the same counts.
"""

from __future__ import annotations

import codecs
import gzip
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recommender.core.errors import DataFileError
from recommender.core.extras import optional
from recommender.training import csv_fast, xlsx
from recommender.training.csv_fast import ARROW_MAX_BYTES
from recommender.training.xlsx import blank, cell_text

if TYPE_CHECKING:
    import pandas as pd

# pandas is imported where it is used, not here: a UTF-8 csv (what `make train` mostly reads) is read by Arrow and
# cleaned without it, and its import (about 0.15 s) would come before the cleaning can start.

REQUIRED = ("InvoiceNo", "StockCode", "Description", "CustomerID")
OPTIONAL = ("Quantity", "InvoiceDate", "UnitPrice")
# Header spellings accepted for each column, compared without case, spaces or underscores (the "Online Retail II"
# export says "Invoice" and "Customer ID").
ALIASES = {"InvoiceNo": {"invoiceno", "invoice", "invoicenumber"}, "CustomerID": {"customerid", "customer"}}
SUPPORTED = (".csv", ".csv.gz", ".xlsx", ".parquet")
REASONS = ("cancelled invoice", "quantity <= 0", "empty invoice or code", "service code")
# A basket line without a date: the int64 view of NaT, smaller than every real time.
NO_TIME = np.iinfo(np.int64).min
CHUNK_ROWS = 1_000_000
# Service lines (postage, fees, manual adjustments) are all letters: "POST", "DOT", "BANK CHARGES".
SERVICE_CODE = re.compile(r"^[A-Za-z ]+$")
# Excel stores digit-only codes as numbers; a reader may give them back as "85123.0".
FLOAT_INTEGER = re.compile(r"^(\d+)\.0+$")


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
    raise DataFileError(
        f"{path.name} lacks required column(s) {', '.join(missing)}; found: {', '.join(names) or 'none'}"
    )


def _csv_chunks(path: Path, kind: str, encoding: str = "utf-8") -> Iterator[Chunk]:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataFileError(f"unknown encoding ENCODING={encoding!r}: use e.g. utf-8, latin-1 or cp1252") from None
    if codecs.lookup(encoding).name == "utf-8" and path.stat().st_size <= ARROW_MAX_BYTES:
        chunk = _arrow_csv(path)
        if chunk is not None:
            yield chunk
            return
    import pandas as pd

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
        reader = pd.read_csv(
            path, usecols=list(rename), dtype=str, keep_default_na=False, chunksize=CHUNK_ROWS, encoding=encoding
        )
        for chunk in reader:
            yield chunk.rename(columns=rename)
    except UnicodeDecodeError:
        raise _not_encoded(path, kind, encoding) from None
    except (gzip.BadGzipFile, EOFError, zipfile.BadZipFile, OSError, pd.errors.ParserError, ValueError) as err:
        raise DataFileError(f"cannot read {path.name} as {kind}: {err}") from None


def _arrow_csv(path: Path) -> CodedChunk | None:
    """The whole csv at once with Arrow's reader (parsing on both cores, about twice as fast as pandas'; started
    before the imports when the command prefetched it: training/csv_fast.py), each column as codes into its
    distinct values, so that cleaning works once per distinct value, without pandas; None when Arrow cannot read
    it (a ragged row, bad UTF-8, ...), when pyarrow is not installed (the light install), or when its header is
    anything but distinct non-empty names with the required columns: pandas' reader then reads it, or names the
    problem, as it always has."""
    try:
        names = csv_fast.header(path)
    except (OSError, EOFError, UnicodeDecodeError, csv_fast.csv.Error):
        return None
    if not names or len(set(names)) != len(names) or not all(names):  # pandas would rename these
        return None
    try:
        rename = {original: wanted for wanted, original in _column_map(names, path).items()}
    except DataFileError:  # pandas' reader says it, in its words
        return None
    encoded = csv_fast.read_encoded(path, list(rename))
    if encoded is None or any(array.null_count for array in encoded.values()):
        return None
    columns = {}
    for original, wanted in rename.items():
        # Read from the arrays' buffers and as Python lists: pyarrow's to_numpy imports pandas on first use.
        indices, values = encoded[original].indices, encoded[original].dictionary.to_pylist()
        buffer, kind = indices.buffers()[1], f"<i{indices.type.bit_width // 8}"
        codes = np.frombuffer(buffer, dtype=kind) if buffer is not None else np.empty(0, dtype=kind)
        columns[wanted] = Coded(codes[indices.offset : indices.offset + len(indices)], np.array(values, dtype=object))
    return CodedChunk(columns, len(next(iter(encoded.values()))) if encoded else 0)


def _not_encoded(path: Path, kind: str, encoding: str) -> DataFileError:
    """The error for a file that is not text in `encoding`, naming the first line that is not and how to go on."""
    decoder = codecs.getincrementaldecoder(encoding)()
    where = ""
    with gzip.open(path, "rb") if kind.endswith(".gz") else open(path, "rb") as f:
        head = f.read(4096)
        if head.startswith(b"PK\x03\x04") or b"\x00" in head:
            return DataFileError(
                f"cannot read {path.name} as {kind}: it is binary, not {encoding} text (a zip or "
                f"xlsx renamed? UTF-16 text needs ENCODING=utf-16)"
            )
        f.seek(0)
        for number, line in enumerate(f, 1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as err:
                where = f" (line {number}: byte {line[err.start : err.end].hex(' ')})"
                break
    return DataFileError(
        f"{path.name} is not {encoding} text{where}: save it as UTF-8, or give its encoding, "
        f"e.g. ENCODING=cp1252 (Windows, Excel) or ENCODING=latin-1"
    )


def _xlsx_rows(path: Path) -> list[list]:
    """The first sheet's cells as Python values (python-calamine: several times faster than openpyxl)."""
    try:
        from python_calamine import CalamineWorkbook
    except ImportError:  # the slow path still works without the Rust reader
        return _openpyxl_rows(path)
    workbook = CalamineWorkbook.from_path(str(path))
    if not workbook.sheet_names:
        raise DataFileError(f"{path.name} has no worksheet")
    return workbook.get_sheet_by_index(0).to_python(skip_empty_area=False)


def _openpyxl_rows(path: Path) -> list[list]:
    import pandas as pd

    return pd.read_excel(path, sheet_name=0, engine="openpyxl", header=None, dtype=object).values.tolist()


def xlsx_rows(path: Path) -> list[list]:
    """The first sheet's rows as Python values, without the trailing empty rows of its used range;
    DataFileError for a damaged or empty workbook."""
    try:
        rows = _xlsx_rows(path)
    except DataFileError:
        raise
    except Exception as err:  # calamine and zipfile raise their own types for damaged files
        raise _damaged(path, err) from None
    while rows and blank(rows[-1]):
        rows.pop()
    if not rows:
        raise DataFileError(f"{path.name} is empty")
    return rows


def _damaged(path: Path, err: BaseException) -> DataFileError:
    return DataFileError(f"cannot read {path.name} as .xlsx: {type(err).__name__}: {err}")


def _xlsx_chunks(path: Path) -> Iterator[pd.DataFrame]:
    """The first sheet's data rows as text columns named as REQUIRED/OPTIONAL, streamed in chunks (training/xlsx.py:
    the parse may already have started, and each distinct cell value is converted once)."""
    try:
        try:
            import python_calamine  # noqa: F401
        except ImportError:  # the slow path still works without the Rust reader
            rows = iter(_openpyxl_rows(path))
        else:
            rows = xlsx.sheet_rows(xlsx.first_sheet(path))
        header = next(rows, None)
        if header is not None and blank(header):
            # Nothing but a blank header row: the file is as good as empty (the header is never data)
            rest = list(rows)
            if all(blank(row) for row in rest):
                header = None
            rows = iter(rest)
    except DataFileError:
        raise
    except Exception as err:  # calamine and zipfile raise their own types for damaged files
        raise _damaged(path, err) from None
    if header is None:
        raise DataFileError(f"{path.name} is empty")
    names = [cell_text(cell) for cell in header]
    columns = {wanted: names.index(original) for wanted, original in _column_map(names, path).items()}
    yield from xlsx.frames(rows, columns)


def _arrow_text(column) -> np.ndarray:
    """A Parquet column as the csv export would write it: text, "" for nulls, dates as "2010-12-01 08:26:00"."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(column.type):
        column = pc.strftime(column, format="%Y-%m-%d %H:%M:%S")
    elif pa.types.is_date(column.type):
        column = pc.strftime(column, format="%Y-%m-%d")
    elif pa.types.is_floating(column.type):
        # 17850.0 -> "17850" as in a csv; codes and ids are compared as text
        whole = pc.equal(column, pc.floor(column))
        column = pc.if_else(
            whole, pc.cast(pc.cast(column, pa.int64(), safe=False), pa.string()), pc.cast(column, pa.string())
        )
    elif not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return pc.fill_null(column, "").to_numpy(zero_copy_only=False)


def _parquet_chunks(path: Path, name: str) -> Iterator[pd.DataFrame]:
    pa = optional("pyarrow", "Parquet input")
    import pandas as pd
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataFileError(f"cannot read {name} as .parquet: {err}") from None
    columns = _column_map(parquet.schema_arrow.names, Path(name))
    try:
        if parquet.metadata.num_rows == 0:
            yield pd.DataFrame({wanted: pd.Series([], dtype=object) for wanted in columns})
            return
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=list(dict.fromkeys(columns.values()))):
            yield pd.DataFrame({wanted: _arrow_text(batch.column(original)) for wanted, original in columns.items()})
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataFileError(f"cannot read {name} as .parquet: {err}") from None


def read_part(path: Path, kind: str, name: str | None = None, encoding: str = "utf-8") -> Iterator[Chunk]:
    """The raw rows of one local file as text columns named as REQUIRED/OPTIONAL, in chunks (a csv decoded strictly
    as `encoding`): pandas DataFrames, or CodedChunks for a csv Arrow read (as_frame makes either a DataFrame)."""
    if kind == ".xlsx":
        yield from _xlsx_chunks(path)
    elif kind == ".parquet":
        yield from _parquet_chunks(path, name or path.name)
    else:
        yield from _csv_chunks(path, kind, encoding)


def read_chunks(path: str | Path, encoding: str = "utf-8") -> Iterator[Chunk]:
    """The raw rows of a file, folder of parts or s3:// location, as text columns, in chunks (as read_part's), parts
    in order; DataFileError when the input cannot be used."""
    from recommender.training.event_tables import purchase_chunks
    from recommender.training.sources import EVENTS_KIND, local_file, resolve

    for part in resolve(path).parts:
        if part.kind == EVENTS_KIND:
            yield from purchase_chunks(part.location)
            continue
        with local_file(part) as local:
            yield from read_part(local, part.kind, part.name, encoding)


def _coded(column: Any, clean: Callable[[str], str] = str.strip) -> Coded:
    """A column as row codes and cleaned distinct values: string work runs once per distinct value, not per row.

    A CodedChunk's column or a categorical one (a workbook's: each value once already) hands over its own codes;
    anything else is factorized here."""
    if isinstance(column, Coded):
        return Coded(column.codes, _cleaned(column.values, clean))
    codes = _category_codes(column)
    if codes is not None:
        return Coded(codes, _cleaned(column.cat.categories, clean))
    import pandas as pd

    codes, uniques = pd.factorize(column, sort=False)
    return Coded(codes, _cleaned(uniques, clean))


def _category_codes(column: pd.Series) -> np.ndarray | None:
    """A categorical Series' codes when no value is missing, else None."""
    import pandas as pd  # (imported already: the column is pandas')

    if not isinstance(column.dtype, pd.CategoricalDtype):
        return None
    codes = column.cat.codes.to_numpy()
    return codes if not len(codes) or codes.min() >= 0 else None


def first_appearance(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """pd.factorize(codes, sort=False) for integer codes in [0, n): each row's rank among the distinct codes by
    first appearance, and those codes in that order. A stable radix sort when n fits in 16 bits; no pandas."""
    if not len(codes):
        return np.empty(0, dtype=np.intp), codes[:0]
    order = np.argsort(codes.astype(np.uint16) if n <= 2**16 else codes, kind="stable")
    ordered = codes[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    firsts = ordered[starts][np.argsort(order[starts])]  # distinct codes, by the row they first appear in
    rank = np.empty(n, dtype=np.intp)
    rank[firsts] = np.arange(len(firsts))
    return rank[codes], firsts


def _cleaned(uniques: Iterable, clean: Callable[[str], str]) -> np.ndarray:
    values = np.empty(len(uniques), dtype=object)
    values[:] = [clean(str(u)) for u in uniques]
    return values


def clean_code(value: str) -> str:
    """A stock or customer code as the file means it: trimmed, and "85123.0" (a spreadsheet's number) -> "85123"."""
    value = value.strip()
    match = FLOAT_INTEGER.match(value)
    return match.group(1) if match else value


@dataclass
class Coded:
    """A text column of a chunk as row codes into its cleaned distinct values (a value may repeat: "85123" and
    "85123.0" both clean to "85123")."""

    codes: np.ndarray  # integer per row
    values: np.ndarray  # object per code

    def __len__(self) -> int:
        return len(self.codes)

    def rows(self, keep: np.ndarray) -> Coded:
        """The rows where keep (a boolean per row) is True."""
        return Coded(self.codes[keep], self.values)

    def per_row(self, test: Callable[[str], bool]) -> np.ndarray:
        """A boolean per row: test of its value, run once per distinct value."""
        return np.fromiter((test(v) for v in self.values), dtype=bool, count=len(self.values))[self.codes]

    def array(self) -> np.ndarray:
        """The value of each row (object)."""
        return self.values[self.codes] if len(self.codes) else np.empty(0, dtype=object)


@dataclass
class CodedChunk:
    """A chunk as Arrow reads a csv: each column as row codes into its distinct raw values (no pandas)."""

    columns: dict[str, Coded]
    rows: int

    def __len__(self) -> int:
        return self.rows

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def __getitem__(self, name: str) -> Coded:
        return self.columns[name]


Chunk = Any  # a pandas DataFrame of text columns, or a CodedChunk


def as_frame(chunk: Chunk) -> pd.DataFrame:
    """A chunk as a pandas DataFrame (a CodedChunk's columns as categoricals)."""
    import pandas as pd

    if not isinstance(chunk, CodedChunk):
        return chunk
    return pd.DataFrame(
        {
            name: pd.Categorical.from_codes(column.codes, pd.Index(column.values, dtype=object))
            for name, column in chunk.columns.items()
        }
    )


@dataclass
class CleanChunk:
    """The rows of a chunk that survive cleaning, normalized, and how many were dropped for each reason."""

    rows_read: int
    dropped: dict[str, int]
    invoice_coded: Coded  # stripped InvoiceNo
    code_coded: Coded  # stripped StockCode, "85123.0" -> "85123"
    customer_coded: Coded  # normalized CustomerID, "" for a guest checkout
    description_coded: Coded  # stripped Description, "" when empty
    time: np.ndarray  # int64 seconds since the epoch, NO_TIME when undated
    price_coded: Coded | None  # the UnitPrice text when it is a positive number, else ""; None: no column

    def __len__(self) -> int:
        return len(self.invoice_coded)

    # The columns as one object per row (the Spark engine's reading uses these).
    @property
    def invoice(self) -> np.ndarray:
        return self.invoice_coded.array()

    @property
    def code(self) -> np.ndarray:
        return self.code_coded.array()

    @property
    def customer(self) -> np.ndarray:
        return self.customer_coded.array()

    @property
    def description(self) -> np.ndarray:
        return self.description_coded.array()

    @property
    def price(self) -> np.ndarray | None:
        return None if self.price_coded is None else self.price_coded.array()


def clean_chunk(chunk: Chunk) -> CleanChunk:
    """The cleaning rules (docs/training-data.md), the one definition both engines apply to raw text rows."""
    dropped = dict.fromkeys(REASONS, 0)
    invoice = _coded(chunk["InvoiceNo"])
    code = _coded(chunk["StockCode"], clean_code)
    keep = np.ones(len(chunk), dtype=bool)

    def drop(mask: np.ndarray, reason: str) -> None:
        newly = mask & keep
        dropped[reason] += int(newly.sum())
        keep[newly] = False

    drop(invoice.per_row(lambda v: v.upper().startswith("C")), "cancelled invoice")
    if "Quantity" in chunk:
        quantity = _coded(chunk["Quantity"], str)  # parsed once per distinct value
        drop(~_positive(quantity.values)[quantity.codes], "quantity <= 0")
    drop(invoice.per_row(lambda v: v == "") | code.per_row(lambda v: v == ""), "empty invoice or code")
    drop(code.per_row(lambda v: bool(SERVICE_CODE.match(v))), "service code")
    n_kept = int(keep.sum())
    if "InvoiceDate" in chunk and n_kept:
        # parsed once per distinct date of the kept rows, in order of first appearance (as pandas would be given
        # them by a factorization of the kept rows: a parse of mixed formats may depend on the values it sees)
        dates = chunk["InvoiceDate"]
        codes = dates.codes if isinstance(dates, Coded) else _category_codes(dates)
        if codes is not None:
            values = dates.values if isinstance(dates, Coded) else dates.cat.categories
            date_rows, firsts = first_appearance(codes[keep], len(values))
            date_values = [str(u).strip() for u in values.take(firsts)]
        else:
            import pandas as pd

            date_rows, uniques = pd.factorize(dates[keep], sort=False)
            date_values = [str(u).strip() for u in uniques]
        when = _epoch_seconds(date_values)[date_rows]
    else:
        when = np.full(n_kept, NO_TIME, dtype=np.int64)
    price = None
    if "UnitPrice" in chunk:
        price = _coded(chunk["UnitPrice"])
        price = Coded(price.codes, _cleaned(price.values, lambda v: v if _positive_number(v) else "")).rows(keep)
    return CleanChunk(
        rows_read=len(chunk),
        dropped=dropped,
        invoice_coded=invoice.rows(keep),
        code_coded=code.rows(keep),
        customer_coded=_coded(chunk["CustomerID"], clean_code).rows(keep),
        description_coded=_coded(chunk["Description"]).rows(keep),
        time=when,
        price_coded=price,
    )


class Codebook:
    """Stable integer ids for strings, assigned in order of first appearance across chunks."""

    def __init__(self, dtype: type = np.int32) -> None:
        self.ids: dict[str, int] = {}
        self.values: list[str] = []
        self.dtype = dtype

    def encode(self, values: np.ndarray) -> np.ndarray:
        """The id of each value; new values get the next ids in order of first appearance."""
        import pandas as pd

        codes, uniques = pd.factorize(values, sort=False)
        out = np.empty(len(uniques), dtype=self.dtype)
        for j, value in enumerate(uniques):
            idx = self.ids.get(value)
            if idx is None:
                idx = self.ids[value] = len(self.values)
                self.values.append(value)
            out[j] = idx
        return out[codes]

    def encode_coded(self, column: Coded) -> np.ndarray:
        """encode(column.array()), from the rows' integer codes instead of their strings."""
        rows, firsts = first_appearance(column.codes, len(column.values))
        out = np.empty(len(firsts), dtype=self.dtype)
        for j, value in enumerate(column.values[firsts].tolist()):
            idx = self.ids.get(value)
            if idx is None:
                idx = self.ids[value] = len(self.values)
                self.values.append(value)
            out[j] = idx
        return out[rows]

    def array(self) -> np.ndarray:
        """The values in id order, as an object array."""
        return np.array(self.values, dtype=object) if self.values else np.empty(0, dtype=object)


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
        priced = priced or clean.price is not None
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


# A quantity as a csv writes it: optional minus, digits, optional decimals (few enough digits to be exact in pandas'
# parser and Python's alike); anything else goes to pandas.to_numeric.
_PLAIN_NUMBER = re.compile(r"-?\d{1,15}(\.\d{0,15})?")
# A date as Online Retail's csv writes it, in the years where pandas and numpy read it the same way.
_ISO_SECONDS = re.compile(
    r"(19[7-9]\d|2[01]\d\d)-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]) ([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
)


def _positive(values: np.ndarray) -> np.ndarray:
    """Per distinct quantity text, whether it is a number above 0 (pandas.to_numeric's reading, errors as NaN)."""
    if all(isinstance(v, str) and _PLAIN_NUMBER.fullmatch(v) for v in values):
        return np.fromiter((float(v) > 0 for v in values), dtype=bool, count=len(values))
    import pandas as pd

    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    return numbers.to_numpy(dtype=float, na_value=np.nan) > 0


def _epoch_seconds(values: list[str]) -> np.ndarray:
    """Per distinct date text, its seconds since the epoch (int64, NO_TIME when not a date): pandas.to_datetime's
    reading of mixed formats; "2010-12-01 08:26:00" (a csv export's form) read by numpy when every value has it."""
    if values and all(v == "" or _ISO_SECONDS.fullmatch(v) for v in values):
        try:  # (numpy reads "" as NaT too)
            return np.array(values, dtype="datetime64[s]").view(np.int64)
        except ValueError:  # a day its month does not have: pandas makes it NaT
            pass
    import pandas as pd

    stamps = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", format="mixed")
    return stamps.to_numpy("datetime64[s]").view(np.int64)


def _positive_number(value: str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return False


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
