"""Reading CSR rows: the positions of some rows' entries, equal to slicing each row in turn."""

import numpy as np
import pytest

from recommender.serving.csr import entry_sources, entry_total, ranges, spans


@pytest.fixture
def ptr():
    rng = np.random.default_rng(3)
    return np.concatenate([[0], np.cumsum(rng.integers(0, 7, size=40))])  # empty rows among them


@pytest.mark.parametrize("cap", [None, 0, 1, 3, 100])
def test_ranges_equal_slicing_each_row(ptr, cap):
    rows = np.random.default_rng(4).choice(40, size=25)  # repeats and any order
    expected = [np.arange(ptr[r], ptr[r + 1])[: cap if cap is not None else None] for r in rows]
    assert np.array_equal(ranges(ptr, rows, cap), np.concatenate(expected))
    assert entry_total(ptr, rows) == sum(ptr[r + 1] - ptr[r] for r in rows)


def test_entry_sources_invert_ranges(ptr):
    rows = np.arange(40)
    positions = ranges(ptr, rows)
    assert np.array_equal(entry_sources(ptr, positions[::-1]), np.repeat(rows, np.diff(ptr))[::-1])


def test_nothing_to_read():
    assert len(ranges(np.array([0, 0, 0]), np.array([0, 1]))) == 0
    assert len(spans(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))) == 0
