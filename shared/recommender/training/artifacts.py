"""The files of a model version that both engines write the same way (the Annoy index, the item-item table by
source, the items, their prices and descriptions' vectors, the sample invoices), and the manifest's model part."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recommender.core.items import ITEMS_FILE, Items
from recommender.core.resemblance import RESEMBLANCE_FILE, TextIndex
from recommender.training import neighbors, sample_invoices
from recommender.training.embedding import write_index
from recommender.training.params import TrainingParams
from recommender.training.progress import Progress, say

# table_count.npy: per table entry, the training baskets holding both items (the reasons' `baskets`);
# item_price.npy: per item, its most recent unit price in the file (NaN when unknown; the feed's default price).
ARTIFACTS = (
    "index.ann",
    "table_indptr.npy",
    "table_target.npy",
    "table_weight.npy",
    "table_count.npy",
    "item_price.npy",
    ITEMS_FILE,
    sample_invoices.SAMPLES,
    RESEMBLANCE_FILE,  # the items' description vectors: where a product the model never saw belongs
)


@dataclass
class ModelParts:
    """What an engine hands to the driver-side finishing: items in model order (most popular first), baskets
    per item, the item-item table by target (items x K neighbours and weights), the sample invoices, how to count
    the baskets of each table entry, the items' prices, and the SVD embeddings when the index is not written yet."""

    item_codes: list[str]
    descriptions: list[str]
    popularity: np.ndarray  # int64 baskets holding each item
    table_index: np.ndarray  # int32 items x K, -1 pads
    table_weight: np.ndarray  # float32 items x K
    k: int
    ridge: float
    baskets: int
    customer_rows: int
    samples: list[dict]
    pair_counts: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (indptr, target) by source -> baskets per entry
    prices: np.ndarray | None = None  # float64 per item, NaN unknown; None: the input has no UnitPrice
    signal: dict | None = None  # copurchase.measure's figures
    embeddings: np.ndarray | None = None


def finish_model(folder: Path, parts: ModelParts, params: TrainingParams, progress: Progress = say) -> dict:
    """Write the artifacts both engines share (Annoy index from the embeddings when given, the table by source,
    the items, the sample invoices) into folder; return the manifest's model part."""
    if parts.embeddings is not None:
        write_index(parts.embeddings, params, folder, progress)
    indptr, target, weight = neighbors.by_source(parts.table_index, parts.table_weight)
    np.save(folder / "table_indptr.npy", indptr)
    np.save(folder / "table_target.npy", target)
    np.save(folder / "table_weight.npy", weight)
    np.save(folder / "table_count.npy", parts.pair_counts(indptr, target))
    prices = parts.prices if parts.prices is not None else np.full(len(parts.item_codes), np.nan)
    np.save(folder / "item_price.npy", prices.astype(np.float64))
    items = Items(parts.item_codes, parts.descriptions, parts.popularity.tolist())
    (folder / ITEMS_FILE).write_bytes(items.to_json())
    (folder / RESEMBLANCE_FILE).write_bytes(TextIndex.build(parts.descriptions).to_bytes())
    sample_invoices.write(folder / sample_invoices.SAMPLES, parts.samples)
    return {
        "baskets": parts.baskets,
        "signal": parts.signal,
        "factors": parts.k,
        "metric": "angular",
        "neighbors": int(parts.table_index.shape[1]),
        "ridge": round(parts.ridge, 4),
        "customer_rows": parts.customer_rows,
        "table_entries": int(len(target)),
        "query": {"candidates_per_item": params.candidates_per_item, "search_k_per_item": params.search_k_per_item},
    }


def purchase_period(basket_time: np.ndarray) -> dict | None:
    """The first and last purchase a model learned from (None for a file without dates)."""
    dated = basket_time[~np.isnat(basket_time)]
    if not len(dated):
        return None
    return {"first": str(dated.min()), "last": str(dated.max())}
