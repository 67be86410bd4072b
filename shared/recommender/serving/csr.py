"""Reading compressed-row (CSR) arrays: the entries of some rows, as positions (numpy only). The item-item table,
the posting lists and the description words are all stored this way."""

from __future__ import annotations

import numpy as np


def spans(starts: np.ndarray, lengths: np.ndarray, total: int | None = None) -> np.ndarray:
    """Positions start, start + 1, ... for each (start, length), concatenated in order (total: lengths' sum, when
    the caller has it)."""
    positions = np.arange(int(lengths.sum()) if total is None else total)
    # in place: one temporary less on the answer's path
    positions += np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return positions


def ranges(ptr: np.ndarray, rows: np.ndarray, cap: int | None = None) -> np.ndarray:
    """Positions of the rows' entries, concatenated (rows in the order given); with cap, each row's first cap."""
    starts = ptr[rows]
    lengths = ptr[rows + 1] - starts
    if cap is not None:
        lengths = np.minimum(lengths, cap)
    return spans(starts, lengths)


def entry_total(ptr: np.ndarray, rows: np.ndarray) -> int:
    """How many entries the rows hold in all (every entry of a basket's rows, before any bound)."""
    return int((ptr.take(rows + 1) - ptr.take(rows)).sum())


def entry_sources(ptr: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """The row of each entry (positions), whatever order they come in."""
    return ptr.searchsorted(entries, side="right") - 1
