"""Reading a purchase-history workbook (.xlsx) fast: the parse started early, its rows turned into typed columns.

python-calamine parses the whole first sheet before it hands out a row, and it releases the GIL while it does.
prefetch() therefore starts that parse in a thread as soon as the command knows its input, so that the imports of
training (pandas, scipy, ...), which hold the GIL, run beside it on the other core; so does pandas' own import
(first_sheet). The rows then stream out in chunks, each turned into coded text columns (CodedChunk: row codes into
distinct texts, one text conversion per distinct value, never a Python string per cell, no DataFrame), with the
garbage collector paused: the cell objects calamine hands out are short-lived, and rescanning
them cost more than converting them.

This module imports only the standard library at load time: the command calls prefetch() before it imports the
heavy parts of training.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recommender.training import prefetch as prefetch_file

if TYPE_CHECKING:
    import numpy as np

    from recommender.training.cleaning import CodedChunk

# Rows per chunk: big enough that per-chunk costs (pandas calls in cleaning) vanish, small enough that only one
# chunk's cell objects are alive at a time.
CHUNK_ROWS = 65_536


def _parse(path: Path) -> Any:
    """The first sheet, parsed (python-calamine; the GIL is released while it parses)."""
    from python_calamine import CalamineWorkbook

    from recommender.core.errors import DataFileError

    workbook = CalamineWorkbook.from_path(str(path))
    if not workbook.sheet_names:
        raise DataFileError(f"{path.name} has no worksheet")
    return workbook.get_sheet_by_index(0)


def prefetch(source: object) -> None:
    """Start parsing a local .xlsx in a background thread, for the reader to pick up; anything else: nothing."""
    name = os.fspath(source) if isinstance(source, str | os.PathLike) else ""
    if not str(name).lower().endswith(".xlsx") or "://" in str(name):
        return
    path = Path(name)
    try:
        import python_calamine  # noqa: F401  (without it, the openpyxl fallback reads the file later)
    except ImportError:
        return
    if not path.is_file():  # a folder of parts is read part by part
        return
    prefetch_file.start(path, _parse, "xlsx-prefetch")


def first_sheet(path: Path) -> Any:
    """The parsed first sheet: the one prefetch() started for this file if any, else parsed now."""
    # The parse may still be running on the other core: import what turning its rows into chunks needs meanwhile
    # (pandas holds the GIL for some 0.2 s; imported after the parse, that was 0.2 s more of wall time).
    import pandas  # noqa: F401

    box = prefetch_file.take(path)
    if box is None:
        return _parse(path)
    if "error" in box:
        raise box["error"]
    return box["value"]


def sheet_rows(sheet: Any) -> Iterator[list]:
    """Every row of a parsed sheet from the sheet's first row and column, as calamine hands them out."""
    if sheet.start is None:  # no cell at all (calamine's row iterator cannot start on an empty range)
        return iter(())
    rows = sheet.iter_rows()
    lead = sheet.start[1]
    if not lead:
        return rows
    # The used range starts right of column A: pad to the columns the sheet shows, as to_python does.
    return ([""] * lead + row for row in rows)


def cell_text(value: object) -> str:
    """A cell as the csv export would write it: 85123.0 -> "85123", a date -> "2010-12-01 08:26:00"."""
    if value is None or value != value:  # None, or NaN for an empty cell
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).strip()


def blank(row: list) -> bool:
    """True for a row whose cells are all empty."""
    return all(cell in (None, "") for cell in row)


@contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _batches(rows: Iterator[list], size: int) -> Iterator[list[list]]:
    from itertools import islice

    while True:
        with _collector_paused():  # calamine hands out a fresh object per cell: nothing for the collector to find
            batch = list(islice(rows, size))
        if not batch:
            return
        yield batch


def frames(rows: Iterable[list], columns: dict[str, int], size: int | None = None) -> Iterator[CodedChunk]:
    """The data rows (after the header) as chunks of coded text columns, named as `columns` maps them to cell
    positions, in chunks of `size` rows; trailing empty rows left out (the used range may end in some)."""
    held: list[list[list]] = []  # empty rows not yet known to be followed by data
    for batch in _batches(iter(rows), size or CHUNK_ROWS):
        end = len(batch)
        while end and blank(batch[end - 1]):
            end -= 1
        if not end:
            held.append(batch)
            continue
        for rows_before in held:
            yield _chunk(rows_before, columns)
        held = [batch[end:]] if end < len(batch) else []
        yield _chunk(batch[:end], columns)


def _chunk(rows: list[list], columns: dict[str, int]) -> CodedChunk:
    """One chunk of rows as coded text columns (row codes into distinct texts, as cleaning takes a csv's from
    Arrow): each distinct cell value converted to text once, and no DataFrame or Categorical built."""
    import numpy as np
    import pandas as pd

    from recommender.training.cleaning import Coded, CodedChunk

    with _collector_paused():
        cells = _object_array(rows, max(columns.values(), default=-1) + 1)
        coded = {}
        for name, index in columns.items():
            codes, uniques = pd.factorize(cells[index], use_na_sentinel=False)
            # 85123.0 and "85123" are one text: the values must be distinct
            text_codes, texts = pd.factorize(np.array([cell_text(u) for u in uniques], dtype=object))
            coded[name] = Coded(text_codes[codes], texts.astype(object, copy=False))
        return CodedChunk(coded, len(rows))


def _object_array(rows: list[list], width: int) -> np.ndarray:
    """The rows as a 2-D object array, column-major (one row per column), short rows padded with None."""
    import numpy as np

    try:  # what DataFrame(rows) uses: twice as fast as np.array, and it pads short rows
        from pandas._libs.lib import to_object_array
    except ImportError:  # pandas moved it: the public way
        longest = max(width, *(len(row) for row in rows))
        cells = np.array([row + [None] * (longest - len(row)) for row in rows], dtype=object)
    else:
        cells = to_object_array(rows, min_width=width)
    return cells.T
