"""Product launches: new products absent from the generated history, with their complements known by design.

A launch is the item of a kit that a family (one kit in one design) lacks, in that family's design: "RED POLKA DOT
TEAPOT" for a family selling the red polka dot teacup and saucer. What goes with it is what goes with the family:
its members and its accessory. The history never holds a launch; the product feed lists it (title, category =
its kit, price), which is all a model trained before the launch can place it by. A feed for the whole range
(feed_rows) gives every known product its kit as category too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recommender.tools.synthetic.products import product_arrays
from recommender.tools.synthetic.spec import SyntheticSpec
from recommender.tools.synthetic.vocabulary import KITS

FIRST_LAUNCH_CODE = 200_000  # six digits: never a generated stock code (five digits and a letter at most)


@dataclass(frozen=True)
class Launch:
    """A new product: its feed row and what goes with it by design (its family's members and accessory)."""

    code: str
    title: str
    category: str
    price: float
    family: int
    complements: frozenset[str]


def category(kit: int) -> str:
    """The feed category of a kit's products."""
    return f"Home > {KITS[kit][0].title()}"


def launches(spec: SyntheticSpec, count: int = 20, seed: int = 0) -> list[Launch]:
    """Up to count launches, one per family chosen at random among those lacking an item of their kit."""
    products = product_arrays(spec)
    rng = np.random.default_rng([spec.seed, 21, seed])
    out: list[Launch] = []
    for f in rng.permutation(len(products.family_start)).tolist():
        if len(out) >= count:
            break
        start, size = int(products.family_start[f]), int(products.family_size[f])
        members = np.arange(start, start + size)
        kit = int(products.kit[start])
        have = set(products.item[members].tolist())
        missing = [(noun, pence) for noun, pence in KITS[kit][1] if noun not in have]
        if not missing:
            continue
        noun, pence = missing[int(rng.integers(len(missing)))]
        lead_noun, lead_desc = str(products.item[start]), str(products.desc[start])
        design = lead_desc.replace(lead_noun, "").strip()
        title = f"{noun} {design}" if lead_desc.startswith(lead_noun) else f"{design} {noun}"
        goes_with = set(products.code[members].tolist())
        accessory = int(products.family_accessory[f])
        if accessory >= 0:
            goes_with.add(str(products.code[accessory]))
        out.append(
            Launch(str(FIRST_LAUNCH_CODE + len(out)), title, category(kit), pence / 100, f, frozenset(goes_with))
        )
    return out


def feed_rows(spec: SyntheticSpec, launched: list[Launch]) -> dict[str, dict]:
    """A product feed (code -> attributes as stored) of every generated product (title, kit as category, price)
    and the launches."""
    products = product_arrays(spec)
    rows = {
        str(code): {
            "title": str(desc),
            "category": category(int(kit)),
            "price": float(price),
            "availability": "in_stock",
        }
        for code, desc, kit, price in zip(products.code, products.desc, products.kit, products.price)
    }
    for launch in launched:
        rows[launch.code] = {
            "title": launch.title,
            "category": launch.category,
            "price": launch.price,
            "availability": "in_stock",
        }
    return rows
