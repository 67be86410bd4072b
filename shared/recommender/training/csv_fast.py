"""Reading a csv or csv.gz with Arrow, started before training's imports: the read runs beside them.

Arrow's reader decompresses and parses with the GIL released, and encodes each column as a dictionary (distinct
values once, one integer per row) the same way. prefetch() therefore starts that read in a thread as soon as the
command knows its input, so that the imports of training (pandas, scipy, ...), which hold the GIL, run beside it on
the other core; the reader (ingest) then picks the encoded columns up instead of reading the file again.

The prefetch reads every column as text, before the header is checked: the reader takes the columns it wants from
it only when each is there once and as text; anything else (a read that failed, a header Python's csv module
splits otherwise than Arrow's) and it reads the file itself as before, so the result never depends on the prefetch.

This module imports only the standard library at load time: the command calls prefetch() before it imports the
heavy parts of training.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import os
from pathlib import Path
from typing import Any

from recommender.training import prefetch as prefetch_file

# A csv up to this size on disk is read whole by Arrow (a few hundred MB in memory at most); larger ones in chunks.
ARROW_MAX_BYTES = 64 << 20


def _options(columns: list[str], include: bool, threads: bool = True) -> dict[str, Any]:
    """Arrow's read options: the given columns as dictionary-encoded text (empty fields as "", never null), only
    them if include; parsed on every core if threads, else on the calling thread alone."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return {
        "read_options": pacsv.ReadOptions(block_size=1 << 20, use_threads=threads),
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            include_columns=columns if include else None,
            strings_can_be_null=False,
            # encoded as the parser converts each block (no pass over the strings after the read, and no
            # pyarrow.compute, whose import is 0.03 s on the command's critical path)
            column_types={name: pa.dictionary(pa.int32(), pa.string()) for name in columns},
        ),
    }


def _encode(table: Any, columns: list[str]) -> dict[str, Any]:
    """The columns of a table, each as one dictionary-encoded array (the blocks' dictionaries unified)."""
    return {name: table[name].combine_chunks() for name in columns}


def header(path: Path) -> list[str]:
    """The names in the file's first row (Python's csv module: a guess that the reader checks)."""
    # utf-8-sig: a byte-order mark is not part of the first name (Arrow skips it too)
    with (
        gzip.open(path, "rt", encoding="utf-8-sig", newline="")
        if path.name.lower().endswith(".gz")
        else open(path, encoding="utf-8-sig", newline="") as f
    ):
        return next(csv.reader(f), [])


def _read_all(path: Path) -> dict[str, Any]:
    """Every column of the file as text, dictionary-encoded (names that appear twice left out)."""
    import pyarrow.csv as pacsv

    names = header(path)
    # One thread: the imports beside it keep the other core (they are what the reader waits for), and the read,
    # decompression included, still ends before them.
    table = pacsv.read_csv(path, **_options(names, include=False, threads=False))
    once = [name for name in table.column_names if table.column_names.count(name) == 1]
    return {name: array for name, array in _encode(table, once).items() if str(array.type.value_type) == "string"}


def prefetch(source: object, encoding: str = "utf-8") -> None:
    """Start reading a local UTF-8 .csv or .csv.gz (up to ARROW_MAX_BYTES) in a background thread, for the reader to
    pick up; anything else, or without pyarrow: nothing."""
    name = os.fspath(source) if isinstance(source, str | os.PathLike) else ""
    lower = str(name).lower()
    if not lower.endswith((".csv", ".csv.gz")) or "://" in lower or "," in lower:
        return
    try:
        if codecs.lookup(encoding).name != "utf-8":  # the reader's pandas path decodes other encodings
            return
    except LookupError:
        return
    path = Path(name)
    try:
        if not path.is_file() or path.stat().st_size > ARROW_MAX_BYTES:
            return
        # Imported here, not in the thread: two threads importing modules that import each other can see one
        # half initialized.
        import encodings.utf_8_sig  # noqa: F401  (the header's codec)

        import pyarrow.csv  # noqa: F401
    except (ImportError, OSError):  # the light install reads with pandas
        return
    prefetch_file.start(path, _read_all, "csv-prefetch")


def _prefetched(path: Path, columns: list[str]) -> dict[str, Any] | None:
    """The columns the prefetch read for this file (and forget it), or None: not started, failed, or other columns."""
    box = prefetch_file.take(path)
    if box is None:
        return None
    found = box.get("value") or {}
    if not all(name in found for name in columns):
        return None
    return {name: found[name] for name in columns}


def read_encoded(path: Path, columns: list[str]) -> dict[str, Any] | None:
    """The named columns of a UTF-8 csv as text, each dictionary-encoded (pyarrow arrays): the prefetched ones when
    prefetch() read this file, else read now on both cores; None when Arrow cannot read it (a ragged row, bad
    UTF-8, a missing column, ...) or pyarrow is not installed."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        return None
    encoded = _prefetched(path, columns)
    if encoded is not None:
        return encoded
    try:
        table = pacsv.read_csv(path, **_options(columns, include=True))
        return _encode(table, columns)
    except (pa.ArrowException, OSError, ValueError):
        return None
