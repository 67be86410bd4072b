"""Reading a purchase-history workbook (.xlsx) fast: the parse started early, its rows turned into typed columns.

python-calamine parses the whole first sheet before it hands out a row, and it releases the GIL while it does.
prefetch() therefore starts that parse in a thread as soon as the command knows its input, so that the imports of
training (pandas, scipy, ...), which hold the GIL, run beside it on the other core; so does pandas' own import
(first_sheet). The rows then stream out in batches into one chunk of coded text columns for the whole sheet
(CodedChunk: row codes into distinct texts, as Arrow hands over a whole csv, so that cleaning works once per distinct
value of the file), each distinct cell value converted to text once in the whole sheet, never a Python string per
cell, no DataFrame, with the garbage collector paused: the cell objects calamine hands out are short-lived, and
rescanning them cost more than converting them.

This module imports only the standard library at load time: the command calls prefetch() before it imports the
heavy parts of training.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recommender.training import prefetch as prefetch_file

if TYPE_CHECKING:
    import numpy as np

    from recommender.training.cleaning import CodedChunk

# Rows taken from calamine at a time: only one batch's cell objects are alive at once, few enough that they are
# still in the processor's cache when they are hashed and freed (16,384 rows: 0.45-0.48 s for Online Retail's 541,909,
# against 0.47-0.55 s in batches of 65,536), enough that the calls per batch do not count.
CHUNK_ROWS = 16_384


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


def frames(rows: Iterable[list], columns: dict[str, int], size: int | None = None) -> Iterator[CodedChunk]:
    """The data rows (after the header) as one chunk of coded text columns, named as `columns` maps them to cell
    positions (as Arrow hands over a whole csv, so that cleaning works once per distinct value of the file, not of
    each chunk), taken from `rows` `size` rows at a time: only that many rows' cell objects are alive at once.
    Trailing empty rows are left out (the used range may end in some); nothing at all when no row is left."""
    import numpy as np

    from recommender.training.cleaning import Coded, CodedChunk

    width = max(columns.values(), default=-1) + 1
    coders = {name: _Coder() for name in columns}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in columns}
    rows = iter(rows)
    taken = kept = 0  # rows taken, and up to the last non-empty one
    with _collector_paused():  # calamine hands out a fresh object per cell: nothing for the collector to find
        while batch := list(islice(rows, size or CHUNK_ROWS)):
            cells = _object_array(batch, width)
            for name, index in columns.items():
                parts[name].append(coders[name].codes(cells[index]))
            end = len(batch)
            while end and blank(batch[end - 1]):
                end -= 1
            kept = taken + end if end else kept
            taken += len(batch)
            del batch, cells  # freed before the next batch's cells are made
    if kept:
        coded = {name: Coded(np.concatenate(parts[name])[:kept], coders[name].texts()) for name in columns}
        yield CodedChunk(coded, kept)


class _Coder:
    """One column's cells as codes into their distinct texts, batch after batch: each distinct cell value is
    converted to text once in the whole sheet, and cells that give one text (85123.0 and "85123") one code."""

    def __init__(self) -> None:
        self.by_cell: dict[object, int] = {}
        self.by_text: dict[str, int] = {}

    def _code(self, text: str) -> int:
        return self.by_text.setdefault(text, len(self.by_text))

    def codes(self, cells: np.ndarray) -> np.ndarray:
        """The code of each cell of a batch (an object array), int32."""
        import numpy as np
        import pandas as pd

        # One hash of each cell in C; empty cells (None, NaN) get -1, the last entry of the lookup table.
        codes, uniques = pd.factorize(cells)
        table = np.empty(len(uniques) + 1, dtype=np.int32)
        by_cell, code = self.by_cell, self._code
        for j, cell in enumerate(uniques.tolist()):
            # True == 1 == 1.0 as dictionary keys, but their texts differ ("True", "1"): a bool is keyed apart
            key = (bool, cell) if cell.__class__ is bool else cell
            found = by_cell.get(key)
            if found is None:
                found = by_cell[key] = code(cell_text(cell))
            table[j] = found
        if len(codes) and codes.min() < 0:
            table[-1] = code("")
        return table[codes]

    def texts(self) -> np.ndarray:
        """The distinct texts, in code order (object)."""
        import numpy as np

        texts = np.empty(len(self.by_text), dtype=object)
        texts[:] = list(self.by_text)
        return texts


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
