"""The model's items: codes, descriptions, popularity, and search over them."""

from __future__ import annotations

import json
import re
import threading
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

WORD = re.compile(r"[A-Z0-9]+")
# The items' artifact in a model version. The stored name predates the word "items"; it stays so that every model
# version already published loads as before.
ITEMS_FILE = "catalog.json"


class Item(NamedTuple):
    """One product as the API shows it (a tuple of plain values: many can be cached at no cost to the GC)."""

    stock_code: str
    description: str
    popularity: int


@dataclass
class Items:
    """The model's items in model order (item i is row i of every model array; training numbers them by
    popularity): items[i] is the Item at row i, items.index[code] its row."""

    codes: list[str]
    descriptions: list[str]
    popularity: list[int]  # number of training baskets holding the item
    index: dict[str, int] = field(init=False, repr=False)
    _by_popularity: list[int] = field(init=False, repr=False)
    # Every row's Item, built once: answers take theirs by row, with no tuple built per request.
    _rows: list[Item] = field(init=False, repr=False, compare=False)
    _search: _SearchIndex | None = field(init=False, repr=False, compare=False, default=None)
    _search_lock: threading.Lock = field(init=False, repr=False, compare=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.index = {code: i for i, code in enumerate(self.codes)}
        self._by_popularity = sorted(range(len(self.codes)), key=lambda i: -self.popularity[i])  # stable: ties by row
        self._rows = [Item(*values) for values in zip(self.codes, self.descriptions, self.popularity)]

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> Item:
        """The item at model row i."""
        return self._rows[i]

    def take(self, rows: list[int]) -> list[Item]:
        """The items at model rows (one call for a whole answer)."""
        every = self._rows
        return [every[i] for i in rows]

    def rows(self, codes: Iterable[str]) -> np.ndarray:
        """The distinct rows of the codes the model knows, ascending (others ignored)."""
        index = self.index
        return np.asarray(sorted({index[c] for c in codes if c in index}), dtype=np.int64)

    def most_popular(self) -> list[int]:
        """Item rows from most to least popular (ties by row, so answers are stable)."""
        return self._by_popularity

    def search(self, query: str, limit: int = 20) -> list[Item]:
        """Items whose code starts with query, then items whose description holds every word of it; popular first.

        A word of the query matches a description word it begins ("TEA" matches "TEACUP"). The first search of a
        model's items builds their index (a fraction of a second at 100k items); later ones take well under 5 ms.
        """
        q = query.strip().upper()
        if not q:
            return [self._rows[i] for i in self._by_popularity[:limit]]
        return [self._rows[i] for i in self.search_index().search(q, limit)]

    def search_index(self) -> _SearchIndex:
        """The search index, built on first use (once, whichever thread asks first)."""
        if self._search is None:
            with self._search_lock:
                if self._search is None:
                    self._search = _SearchIndex(self.codes, self.descriptions, self._by_popularity)
        return self._search

    def to_json(self) -> bytes:
        """Serialized form stored as a model artifact (ITEMS_FILE)."""
        return json.dumps(
            {"codes": self.codes, "descriptions": self.descriptions, "popularity": self.popularity},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Items:
        """Inverse of to_json."""
        raw = json.loads(data)
        return cls(raw["codes"], raw["descriptions"], raw["popularity"])


def _after_prefix(prefix: str) -> str:
    """The smallest string greater than every string that starts with prefix."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class _SearchIndex:
    """Sorted codes and an inverted index of description words, over items numbered by popularity (rank 0 first).

    Every word of the query selects a contiguous run of the sorted vocabulary, hence a contiguous slice of the
    occurrence array; a query is a few numpy operations over the items, never a Python loop over its items.
    """

    def __init__(self, codes: list[str], descriptions: list[str], by_popularity: list[int]) -> None:
        self.rows = np.asarray(by_popularity, dtype=np.int64)  # rank -> model row
        self.n = len(by_popularity)
        ranked_codes = np.asarray([codes[i].upper() for i in by_popularity], dtype=str)
        order = np.argsort(ranked_codes, kind="stable")
        self.code_keys = ranked_codes[order].tolist()
        self.code_ranks = order.astype(np.int64)
        # Occurrences (word, rank) without repeats, sorted by word then rank, built with numpy: a Python sort of
        # the pairs takes seconds at 100k items.
        ids: dict[str, int] = {}
        word_ids, ranks = [], []
        for rank, i in enumerate(by_popularity):
            for word in set(WORD.findall(descriptions[i].upper())):
                word_ids.append(ids.setdefault(word, len(ids)))
                ranks.append(rank)
        self.vocabulary = sorted(ids)
        position = np.empty(len(ids), dtype=np.int64)
        position[[ids[w] for w in self.vocabulary]] = np.arange(len(ids))
        word_pos = position[np.asarray(word_ids, dtype=np.int64)]
        order = np.lexsort((np.asarray(ranks, dtype=np.int64), word_pos))
        self.word_ranks = np.asarray(ranks, dtype=np.int64)[order]
        # word_start[k]: where vocabulary word k's occurrences begin in word_ranks (k = len: the end).
        self.word_start = np.searchsorted(word_pos[order], np.arange(len(ids) + 1))

    def _prefix_ranks(self, prefix: str) -> np.ndarray:
        """Ranks of the items with a description word that starts with prefix (repeats possible)."""
        lo = bisect_left(self.vocabulary, prefix)
        hi = bisect_left(self.vocabulary, _after_prefix(prefix), lo)
        return self.word_ranks[self.word_start[lo] : self.word_start[hi]]

    def search(self, q: str, limit: int) -> list[int]:
        """Model rows: codes starting with q, then descriptions holding every word of q; by popularity."""
        lo = bisect_left(self.code_keys, q)
        hi = bisect_left(self.code_keys, _after_prefix(q), lo)
        code_hits = _smallest(self.code_ranks[lo:hi], limit)
        if len(code_hits) >= limit:
            return self.rows[code_hits].tolist()
        words = set(WORD.findall(q))
        # A word that begins another word of the query adds nothing: every item it matches the longer one matches.
        words = {w for w in words if not any(o != w and o.startswith(w) for o in words)}
        if not words:
            return self.rows[code_hits].tolist()
        selections = sorted((self._prefix_ranks(w) for w in words), key=len)
        if not len(selections[0]):
            return self.rows[code_hits].tolist()
        found = np.zeros(self.n, dtype=bool)
        found[selections[0]] = True
        for ranks in selections[1:]:
            matched = np.zeros(self.n, dtype=bool)
            matched[ranks] = True
            found &= matched
        found[code_hits] = False
        word_hits = np.flatnonzero(found)[: limit - len(code_hits)]
        return self.rows[np.concatenate([code_hits, word_hits])].tolist()


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    """The k smallest values, sorted (all of them when there are fewer)."""
    if len(values) > k:
        values = np.partition(values, k - 1)[:k]
    return np.sort(values)
