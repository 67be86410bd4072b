"""Reading purchase history (.csv, .csv.gz, .xlsx, .parquet, a folder of parts, s3://) as raw text chunks, in the
columns the product reads (training/ingest.py cleans them into baskets).

A UTF-8 csv is read whole by Arrow (started before training's imports when the command prefetched it:
training/csv_fast.py) into a CodedChunk, without pandas; a workbook into CodedChunks too (training/xlsx.py); every
other input, and a csv Arrow cannot read, into pandas DataFrames of text columns.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recommender.core.errors import DataFileError
from recommender.core.extras import optional
from recommender.training import csv_fast, xlsx
from recommender.training.cleaning import Chunk, Coded, CodedChunk
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
CHUNK_ROWS = 1_000_000


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
    except (OSError, EOFError, UnicodeDecodeError, csv.Error):
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
    return CodedChunk(columns, len(next(iter(encoded.values()))))


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


def _xlsx_chunks(path: Path) -> Iterator[CodedChunk]:
    """The first sheet's data rows as text columns named as REQUIRED/OPTIONAL, one coded chunk for the sheet
    (training/xlsx.py: the parse may already have started, its rows are taken in batches, and each distinct cell
    value is converted once)."""
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
    as `encoding`): pandas DataFrames, or CodedChunks for a workbook or a csv Arrow read (as_frame makes either a
    DataFrame)."""
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
