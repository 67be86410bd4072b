"""What to generate: the spec and its presets, the file's columns, the generator's limits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np

from recommender.core.errors import InvalidInput

COLUMNS: tuple[str, ...] = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)

# Invoices per block: rows are made and written a block at a time, so memory stays bounded at any size.
# Each block draws from its own seeded stream, so a frame equals the file it would be written to.
BLOCK = 20_000
FIRST_INVOICE = 536_365  # where the real data set starts numbering
FIRST_CUSTOMER = 12_346
CUSTOMER_IDS = 99_999 - FIRST_CUSTOMER + 1  # five-digit CustomerIDs, as in the real file, up to this many
_MAX_CUSTOMERS = 10_000_000  # beyond five digits the IDs simply get longer (a big retailer's 100M-row history)
BASE_CODES = 90_000  # five-digit stock-code bases 10000..99999
_MAX_PRODUCTS = 500_000
_MAX_INVOICES = 10_000_000  # the invoice plan is held in memory, about 100 bytes per invoice


# Bits of the per-invoice dirt mask.
DIRT_QUANTITY, DIRT_EMPTY, DIRT_SPACE = 1, 2, 4


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: sizes, seed, calendar and the knobs of basket structure and dirt."""

    invoices: int = 3_000  # invoice numbers in the output, cancellations included
    products: int = 400
    customers: int = 400
    seed: int = 0
    start: str = "2010-12-01"
    days: int = 374
    guest_share: float = 0.25  # share of invoices without a CustomerID
    basket_median: float = 12.0  # distinct products per purchase invoice
    single_share: float = 0.1  # purchase invoices with a single product
    complement_prob: float = 0.6  # chance a family member joins a basket that holds its anchor
    loyalty: float = 0.6  # chance a registered customer's theme comes from their favourite families
    noise_share: float = 0.25  # share of basket lines that are popular or random products, not theme members
    # Exponent of the Zipf law over families and over bestsellers. Below 1, so that at 100k products the
    # head does not swallow the product range: the top 10% of products hold 35-50% of lines at any size (45% real).
    zipf: float = 0.8
    duplicate_share: float = 0.06  # share of rows that repeat a product already on the invoice
    cancel_share: float = 0.02
    dirty: bool = True  # cancellations, service lines, bad quantities, empty or drifting descriptions, padded codes

    def __post_init__(self) -> None:
        if not 1 <= self.invoices <= _MAX_INVOICES:
            raise InvalidInput(f"invoices must be between 1 and {_MAX_INVOICES}, got {self.invoices}")
        if not 2 <= self.products <= _MAX_PRODUCTS:
            raise InvalidInput(f"products must be between 2 and {_MAX_PRODUCTS}, got {self.products}")
        if not 1 <= self.customers <= _MAX_CUSTOMERS:
            raise InvalidInput(f"customers must be between 1 and {_MAX_CUSTOMERS}, got {self.customers}")
        if self.days < 1:
            raise InvalidInput(f"days must be at least 1, got {self.days}")
        if self.basket_median < 1:
            raise InvalidInput(f"basket_median must be at least 1, got {self.basket_median}")
        if self.zipf < 0:
            raise InvalidInput(f"zipf must not be negative, got {self.zipf}")
        for name in ("guest_share", "single_share", "complement_prob", "loyalty", "noise_share", "cancel_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInput(f"{name} must be between 0 and 1, got {value}")
        if not 0.0 <= self.duplicate_share < 0.5:
            raise InvalidInput(f"duplicate_share must be in [0, 0.5), got {self.duplicate_share}")
        try:
            date.fromisoformat(self.start)
        except (TypeError, ValueError):
            raise InvalidInput(f"start must be a date like 2010-12-01, got {self.start!r}") from None


TINY = SyntheticSpec(invoices=300, products=60, customers=40, basket_median=8.0)
DEFAULT = SyntheticSpec()
# About 10M rows: 1M invoices of ~10 lines. A million numbers do not fit in six digits: numbering starts
# at 100000 and the last ~100k invoices get seven.
SCALE = SyntheticSpec(invoices=1_000_000, products=100_000, customers=80_000, basket_median=8.0)
_PRESETS = {"tiny": TINY, "default": DEFAULT, "scale": SCALE}


def preset(name: str, **changes: object) -> SyntheticSpec:
    """The named preset ("tiny", "default" or "scale"), with any fields replaced."""
    try:
        base = _PRESETS[name]
    except KeyError:
        raise InvalidInput(f"unknown preset {name!r}; choose one of {', '.join(_PRESETS)}") from None
    return replace(base, **changes)


@dataclass(frozen=True)
class GenerationSummary:
    """What write_csv produced: row and invoice counts, distinct products and customers seen, and the file."""

    rows: int
    invoices: int
    products: int
    customers: int
    path: Path


def first_minute(spec: SyntheticSpec) -> int:
    """The spec's first day as minutes since the Unix epoch."""
    return int(np.datetime64(spec.start, "m").astype(np.int64))
