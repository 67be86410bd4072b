"""Search benchmark: item search (the work of GET /items) over the 100k items of the generator's scale preset."""

from __future__ import annotations

import time

import numpy as np

from bench.common import percentile
from bench.options import Options
from bench.report import PartResult, Row, target_row
from recommender.core.items import Items


def search_items(products: int) -> Items:
    """Items of the synthetic generator's products (its `scale` preset has 100k), popularity Zipf-like."""
    from recommender.tools import synthetic

    spec = synthetic.preset("scale", products=products)
    generated = synthetic.product_arrays(spec)
    popularity = np.random.default_rng(0).zipf(1.3, size=len(generated.code)).tolist()
    return Items([str(c) for c in generated.code], [str(d) for d in generated.desc], popularity)


def bench_search(options: Options) -> PartResult:
    """Part search: Items.search (what GET /items does, off the event loop) over 100k items."""
    products = options.search_products
    items = search_items(products)
    started = time.perf_counter()
    items.search_index()
    build = time.perf_counter() - started
    rng = np.random.default_rng(1)
    vocabulary = items.search_index().vocabulary
    queries = ["", "2", "8", "A", "T", "RED", "TEA", "RED TEA", "S W", "85123"]
    queries += [
        " ".join(chr(65 + int(i)) for i in rng.integers(0, 26, 66)),  # 66 one-letter words
        " ".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
        " ".join(vocabulary[:60])[:200],
    ]
    queries += [
        " ".join(str(vocabulary[int(j)])[: int(rng.integers(1, 5))] for j in rng.integers(0, len(vocabulary), 3))
        for _ in range(200)
    ]
    queries += [str(items.codes[int(j)])[: int(rng.integers(1, 5))] for j in rng.integers(0, len(items), 100)]
    times = {q: [] for q in queries}
    for _ in range(options.search_repeats):
        for q in queries:
            for limit in (20, 100):
                t = time.perf_counter_ns()
                items.search(q, limit)
                times[q].append((time.perf_counter_ns() - t) / 1e6)
    flat = np.asarray([t for ts in times.values() for t in ts])
    worst = max(times, key=lambda q: np.median(times[q]))
    rows = [
        Row("search", f"item search index build, {products:,} items", build, "s"),
        Row("search", "GET /items search p50", percentile(flat, 50), "ms"),
        target_row(
            "search",
            "GET /items search p99 (adversarial queries included)",
            "search_p99_ms",
            percentile(flat, 99),
            "ms",
            note=f"slowest query (median {np.median(times[worst]):.2f} ms): {worst[:40]!r}",
        ),
    ]
    md = [
        "## search details",
        "",
        f"`Items.search` in-process on the synthetic generator's {products:,} products (the `scale` preset's "
        f"products), {len(queries)} queries x limits 20 and 100 x {options.search_repeats} repeats: code prefixes, "
        "description words and prefixes, and adversarial ones (66 one-letter words, every letter and digit, 60 "
        "whole words); the index is built once per model (the local server builds it when it primes a model).",
    ]
    return PartResult(
        "search",
        rows,
        {
            "build_seconds": build,
            "queries": len(queries),
            "p50_ms": percentile(flat, 50),
            "p99_ms": percentile(flat, 99),
            "max_ms": float(flat.max()),
            "products": products,
        },
        "",
        0,
        [],
        [],
        options.quick,
        "\n".join(md),
    )
