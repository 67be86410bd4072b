"""Real baskets for the console's "Try a real basket": a random one of the training invoices a model keeps."""

from __future__ import annotations

import json
import random
from functools import lru_cache

from recommender.core import registry
from recommender.core.errors import NotFound
from recommender.core.storage import Storage
from recommender.serving.model import Model
from recommender.serving.schemas import SampleBasketOut, SampleItem


# A version's samples never change: read once per process and version (a handful of versions at most).
@lru_cache(maxsize=4)
def _invoices(storage: Storage, version: str) -> tuple[dict, ...]:
    try:
        raw = json.loads(storage.local_copy(registry.artifact_key(version, registry.SAMPLES)).read_bytes())
    except NotFound:
        raise NotFound(
            f"model version {version} keeps no sample invoices (it was trained before they were "
            "kept): train it again to try real baskets"
        ) from None
    return tuple(raw["invoices"])


def random_basket(model: Model, storage: Storage, rng: random.Random) -> SampleBasketOut:
    """One training invoice of the served model, drawn with rng (its items the model knows)."""
    invoices = _invoices(storage, model.version)
    if not invoices:
        raise NotFound(f"model version {model.version} keeps no sample invoices")
    invoice = rng.choice(invoices)
    items = []
    for code in invoice["items"]:
        i = model.items.index.get(code)
        if i is not None:
            items.append(SampleItem(stock_code=code, description=model.items.descriptions[i]))
    return SampleBasketOut(
        invoice=invoice["invoice"], date=invoice.get("date"), items=items, model_version=model.version
    )
