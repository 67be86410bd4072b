"""Catalog search: the index answers exactly what a scan of every item would, and stops at the limit."""

import random

import numpy as np
import pytest
from recommender.core.catalog import WORD, Catalog

WORDS = ["RED", "REGENCY", "CAKESTAND", "TEA", "TEACUP", "SET", "OF", "3", "HEART", "T-LIGHT", "HOLDER", "WHITE",
         "HANGING", "LANTERN", "JUMBO", "BAG", "PINK", "POLKADOT", "12", "A", "B"]


def scan(catalog: Catalog, query: str, limit: int) -> list[str]:
    """The definition: codes that start with the query, then descriptions holding every query word; popular first."""
    q = query.strip().upper()
    order = catalog.most_popular()
    if not q:
        return [catalog.codes[i] for i in order[:limit]]
    words = WORD.findall(q)
    described_words = [WORD.findall(d.upper()) for d in catalog.descriptions]
    codes = [i for i in order if catalog.codes[i].upper().startswith(q)][:limit]
    described = [i for i in order if i not in codes and words and all(
        any(w.startswith(x) for w in described_words[i]) for x in words)]
    return [catalog.codes[i] for i in (codes + described)[:limit]]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    rng = random.Random(0)
    codes = [f"{rng.choice(['2', '8', '1', 'A'])}{rng.randrange(10000):04d}{rng.choice(['', 'A', 'b'])}" for _ in range(600)]
    codes = list(dict.fromkeys(codes))
    descriptions = [" ".join(rng.sample(WORDS, rng.randint(1, 5))).lower() if rng.random() > 0.02 else ""
                    for _ in codes]
    popularity = [rng.randint(1, 30) for _ in codes]   # many ties: broken by row
    return Catalog(codes, descriptions, popularity)


def test_index_answers_like_a_scan(catalog):
    rng = random.Random(1)
    queries = ["", " ", "2", "8", "a", "A1", "21", "tea", "TEA CUP", "red tea", "t-l", "t light", "3 set",
               "zzz", "re re", "b a", "12 jumbo", "!!", "é", " ".join(WORDS), " ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ")]
    queries += [" ".join(rng.choice(WORDS)[: rng.randint(1, 4)] for _ in range(rng.randint(1, 3))) for _ in range(60)]
    queries += [rng.choice(catalog.codes)[: rng.randint(1, 6)] for _ in range(30)]
    for q in queries:
        for limit in (1, 20, 100):
            found = [item.stock_code for item in catalog.search(q, limit)]
            assert found == scan(catalog, q, limit), (q, limit)
            assert len(found) <= limit


class Counted(list):
    reads = 0

    def __getitem__(self, i):
        Counted.reads += 1
        return super().__getitem__(i)


def test_search_stops_at_the_limit_without_scanning(catalog, monkeypatch):
    index = catalog.search_index()
    # Once indexed, a query is numpy work over the index: only the items returned are read.
    monkeypatch.setattr(catalog, "descriptions", Counted(catalog.descriptions))
    assert len(catalog.search("a", 5)) == 5 and len(catalog.search("t", 3)) == 3
    assert Counted.reads == 8
    assert catalog.search_index() is index


def test_items_carry_code_description_popularity(catalog):
    (item,) = catalog.search(catalog.codes[0], 1)
    assert item == (catalog.codes[0], catalog.descriptions[0], catalog.popularity[0])


def test_empty_catalog_and_index_types():
    empty = Catalog([], [], [])
    assert empty.search("", 5) == [] and empty.search("tea", 5) == []
    assert empty.search_index().word_ranks.dtype == np.int64
