"""The item catalog of a model: codes, descriptions, popularity, and search over them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import NamedTuple

WORD = re.compile(r"[A-Z0-9]+")


class Item(NamedTuple):
    """One product as the API shows it (a tuple of plain values: many can be cached at no cost to the GC)."""

    stock_code: str
    description: str
    popularity: int


@dataclass
class Catalog:
    """Items in model order (item i is row i of every model array; training numbers them by popularity)."""

    codes: list[str]
    descriptions: list[str]
    popularity: list[int]  # number of training baskets holding the item
    index: dict[str, int] = field(init=False, repr=False)
    _words: list[frozenset[str]] = field(init=False, repr=False)
    _by_popularity: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {code: i for i, code in enumerate(self.codes)}
        self._words = [frozenset(WORD.findall(d.upper())) for d in self.descriptions]
        self._by_popularity = sorted(range(len(self.codes)), key=lambda i: -self.popularity[i])  # stable: ties by row

    def __len__(self) -> int:
        return len(self.codes)

    def item(self, i: int) -> Item:
        """The item at model row i."""
        return Item(self.codes[i], self.descriptions[i], self.popularity[i])

    def most_popular(self) -> list[int]:
        """Item rows from most to least popular (ties by row, so answers are stable)."""
        return self._by_popularity

    def search(self, query: str, limit: int = 20) -> list[Item]:
        """Items whose code starts with query, then items whose description holds every word of it; popular first."""
        q = query.strip().upper()
        if not q:
            return [self.item(i) for i in self._by_popularity[:limit]]
        words = WORD.findall(q)
        code_hits, word_hits = [], []
        for i in self._by_popularity:
            if self.codes[i].upper().startswith(q):
                code_hits.append(i)
            elif words and all(any(w.startswith(x) for w in self._words[i]) for x in words):
                word_hits.append(i)
            if len(code_hits) >= limit:
                break
        return [self.item(i) for i in (code_hits + word_hits)[:limit]]

    def to_json(self) -> bytes:
        """Serialized form stored as a model artifact."""
        return json.dumps({"codes": self.codes, "descriptions": self.descriptions, "popularity": self.popularity},
                          ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Catalog":
        """Inverse of to_json."""
        raw = json.loads(data)
        return cls(raw["codes"], raw["descriptions"], raw["popularity"])
