"""Items: search answers exactly what a scan of every item would, and stops at the limit; codes map to rows."""

import random

import numpy as np
import pytest

from recommender.core.items import WORD, Items

WORDS = [
    "RED",
    "REGENCY",
    "CAKESTAND",
    "TEA",
    "TEACUP",
    "SET",
    "OF",
    "3",
    "HEART",
    "T-LIGHT",
    "HOLDER",
    "WHITE",
    "HANGING",
    "LANTERN",
    "JUMBO",
    "BAG",
    "PINK",
    "POLKADOT",
    "12",
    "A",
    "B",
]


def scan(items: Items, query: str, limit: int) -> list[str]:
    """The definition: codes that start with the query, then descriptions holding every query word; popular first."""
    q = query.strip().upper()
    order = items.most_popular()
    if not q:
        return [items.codes[i] for i in order[:limit]]
    words = WORD.findall(q)
    described_words = [WORD.findall(d.upper()) for d in items.descriptions]
    codes = [i for i in order if items.codes[i].upper().startswith(q)][:limit]
    described = [
        i
        for i in order
        if i not in codes and words and all(any(w.startswith(x) for w in described_words[i]) for x in words)
    ]
    return [items.codes[i] for i in (codes + described)[:limit]]


@pytest.fixture(scope="module")
def items() -> Items:
    rng = random.Random(0)
    codes = [
        f"{rng.choice(['2', '8', '1', 'A'])}{rng.randrange(10000):04d}{rng.choice(['', 'A', 'b'])}" for _ in range(600)
    ]
    codes = list(dict.fromkeys(codes))
    descriptions = [
        " ".join(rng.sample(WORDS, rng.randint(1, 5))).lower() if rng.random() > 0.02 else "" for _ in codes
    ]
    popularity = [rng.randint(1, 30) for _ in codes]  # many ties: broken by row
    return Items(codes, descriptions, popularity)


def test_index_answers_like_a_scan(items):
    rng = random.Random(1)
    queries = [
        "",
        " ",
        "2",
        "8",
        "a",
        "A1",
        "21",
        "tea",
        "TEA CUP",
        "red tea",
        "t-l",
        "t light",
        "3 set",
        "zzz",
        "re re",
        "b a",
        "12 jumbo",
        "!!",
        "é",
        " ".join(WORDS),
        " ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ]
    queries += [" ".join(rng.choice(WORDS)[: rng.randint(1, 4)] for _ in range(rng.randint(1, 3))) for _ in range(60)]
    queries += [rng.choice(items.codes)[: rng.randint(1, 6)] for _ in range(30)]
    for q in queries:
        for limit in (1, 20, 100):
            found = [item.stock_code for item in items.search(q, limit)]
            assert found == scan(items, q, limit), (q, limit)
            assert len(found) <= limit


class Counted(list):
    reads = 0

    def __getitem__(self, i):
        Counted.reads += 1
        return super().__getitem__(i)


def test_search_stops_at_the_limit_without_scanning(items, monkeypatch):
    index = items.search_index()
    # Once indexed, a query is numpy work over the index: only the items returned are read.
    monkeypatch.setattr(items, "_rows", Counted(items._rows))
    assert len(items.search("a", 5)) == 5 and len(items.search("t", 3)) == 3
    assert Counted.reads == 8
    assert items.search_index() is index


def test_items_carry_code_description_popularity(items):
    (item,) = items.search(items.codes[0], 1)
    assert item == (items.codes[0], items.descriptions[0], items.popularity[0])


def test_no_items_and_index_types():
    empty = Items([], [], [])
    assert empty.search("", 5) == [] and empty.search("tea", 5) == []
    assert empty.search_index().word_ranks.dtype == np.int64


def test_rows_of_codes_are_the_known_ones_once_ascending():
    items = Items(["B", "A", "C"], ["b", "a", "c"], [3, 2, 1])
    assert items.rows(["C", "X", "B", "C", "A"]).tolist() == [0, 1, 2]
    assert items.rows(["X"]).dtype == np.int64 and not len(items.rows([]))
