"""Deterministic synthetic purchase history in the "Online Retail" CSV format, with known complementary products.

One module per job: `spec` (what to generate, presets), `vocabulary` (words, prices, calendar), `products` (the
product range and the ground truth of what goes together), `plan` (customers and invoices), `rows` (invoices to rows,
and the writers).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from recommender.tools.synthetic.products import complements, product_arrays, product_range
from recommender.tools.synthetic.rows import generate_frame, write_csv, write_parquet_parts
from recommender.tools.synthetic.spec import (
    COLUMNS,
    DEFAULT,
    SCALE,
    TINY,
    GenerationSummary,
    SyntheticSpec,
    preset,
)

__all__ = [
    "COLUMNS",
    "DEFAULT",
    "SCALE",
    "TINY",
    "GenerationSummary",
    "SyntheticSpec",
    "complements",
    "generate_frame",
    "preset",
    "product_arrays",
    "product_range",
    "source_digest",
    "write_csv",
    "write_parquet_parts",
]


def source_digest() -> str:
    """sha256 of the generator's own code: datasets cached by the benchmarks are regenerated when it changes."""
    digest = hashlib.sha256()
    for module in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(module.name.encode() + b"\0" + module.read_bytes())
    return digest.hexdigest()
