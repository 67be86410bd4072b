"""The cleaning rules (docs/training-data.md) in one function, clean_chunk, which both engines apply: the
single-machine trainer to each chunk it reads, Spark to each part on its executors (training/distributed.py), so both
drop the same rows for the same reasons and report the same counts; and the codebooks that number what survives.

Text work runs once per distinct value of a column (Coded: row codes into the distinct values), never per row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

REASONS = ("cancelled invoice", "quantity <= 0", "empty invoice or code", "service code")
# A basket line without a date: the int64 view of NaT, smaller than every real time.
NO_TIME = np.iinfo(np.int64).min
# Service lines (postage, fees, manual adjustments) are all letters: "POST", "DOT", "BANK CHARGES".
SERVICE_CODE = re.compile(r"^[A-Za-z ]+$")
# Excel stores digit-only codes as numbers; a reader may give them back as "85123.0".
FLOAT_INTEGER = re.compile(r"^(\d+)\.0+$")


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
    """clean(str(value)) of each value, as an object array."""
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
        """The cleaned InvoiceNo of each row (object)."""
        return self.invoice_coded.array()

    @property
    def code(self) -> np.ndarray:
        """The cleaned StockCode of each row (object)."""
        return self.code_coded.array()

    @property
    def customer(self) -> np.ndarray:
        """The cleaned CustomerID of each row (object)."""
        return self.customer_coded.array()

    @property
    def description(self) -> np.ndarray:
        """The cleaned Description of each row (object)."""
        return self.description_coded.array()

    @property
    def price(self) -> np.ndarray | None:
        """The kept UnitPrice text of each row (object; None: no such column)."""
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
