"""Sample invoices kept with a model (artifact samples.json): real baskets for the console's "Try a real basket".

Plain inputs only (arrays and lists), so that every training engine (pandas, Spark) writes the same artifact from
the same cleaned baskets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recommender.core import registry

SAMPLES = registry.SAMPLES
COUNT = 200
MIN_ITEMS = 2  # a one-item invoice shows nothing about complements
MAX_ITEMS = 20  # a wholesale order of 300 lines is real, but unreadable in a console


def draw(
    basket_ids: Sequence[str],
    pair_basket: np.ndarray,
    pair_item: np.ndarray,
    item_codes: Sequence[str],
    basket_time: np.ndarray | None = None,
    count: int = COUNT,
    seed: int = 0,
    min_items: int = MIN_ITEMS,
    max_items: int = MAX_ITEMS,
) -> list[dict]:
    """Up to count invoices of min_items..max_items distinct items, drawn at random (seeded) in basket order.

    basket_ids[b] names basket b; (pair_basket[k], pair_item[k]) says basket b holds item row i, once per distinct
    item; item_codes[i] is the stock code of row i; basket_time[b] (datetime64, NaT when unknown) its date.
    Each sample is {"invoice", "date" (YYYY-MM-DD or null), "items" (stock codes, sorted)}, in basket order.
    """
    sizes = np.bincount(np.asarray(pair_basket, dtype=np.int64), minlength=len(basket_ids))
    eligible = np.flatnonzero((sizes >= min_items) & (sizes <= max_items))
    if not len(eligible):  # tiny or odd data: any invoice with something in it
        eligible = np.flatnonzero(sizes > 0)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible, size=min(count, len(eligible)), replace=False))
    keep = np.isin(pair_basket, chosen)
    items_of: dict[int, list[str]] = {int(b): [] for b in chosen}
    for b, i in zip(np.asarray(pair_basket)[keep].tolist(), np.asarray(pair_item)[keep].tolist()):
        items_of[b].append(item_codes[i])
    samples = []
    for b in chosen.tolist():
        date = None
        if basket_time is not None and not np.isnat(basket_time[b]):
            date = str(np.datetime_as_string(basket_time[b], unit="D"))
        samples.append({"invoice": str(basket_ids[b]), "date": date, "items": sorted(items_of[b])})
    return samples


def write(path: Path, samples: list[dict]) -> None:
    """Write the samples artifact (deterministic bytes: the same samples give the same file)."""
    path.write_bytes(json.dumps({"invoices": samples}, ensure_ascii=False, separators=(",", ":")).encode())
