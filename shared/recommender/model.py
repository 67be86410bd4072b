"""A trained model in memory, and answering "what goes with this basket" (numpy and Annoy only: no pandas, no scipy)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from annoy import AnnoyIndex

from . import registry
from .catalog import Catalog, Item
from .errors import ModelUnavailable, NotFound
from .storage import Storage


@dataclass(frozen=True)
class Scored:
    """One recommended item."""

    item: Item
    score: float


@dataclass(frozen=True)
class Recommendation:
    """The answer for one basket."""

    items: list[Scored]
    unknown: list[str]       # basket codes the model does not know (ignored)
    fallback: bool           # True when nothing in the basket was known and popularity answered
    model_version: str


class Model:
    """One loaded, verified model version."""

    def __init__(self, version: str, manifest: dict, catalog: Catalog, index: AnnoyIndex, factors: np.ndarray,
                 nbr_indptr: np.ndarray, nbr_index: np.ndarray, nbr_weight: np.ndarray) -> None:
        self.version = version
        self.manifest = manifest
        self.catalog = catalog
        self.index = index
        self.factors = factors
        self.nbr_indptr = nbr_indptr
        self.nbr_index = nbr_index
        self.nbr_weight = nbr_weight
        params = manifest["params"]
        self.candidates = int(params["candidates"])
        self.svd_weight = float(params["svd_weight"])

    def recommend(self, basket: Sequence[str], n: int) -> Recommendation:
        """The n best items to offer with basket, best first, none from the basket."""
        known, unknown, seen = [], [], set()
        for code in basket:
            code = code.strip()
            if code in seen:
                continue
            seen.add(code)
            i = self.catalog.index.get(code)
            if i is None:
                unknown.append(code)
            else:
                known.append(i)
        n = min(n, len(self.catalog) - len(known))
        if not known:
            top = [i for i in self.catalog.most_popular()[:n]]
            best = max(self.catalog.popularity[top[0]], 1) if top else 1
            items = [Scored(self.catalog.item(i), round(self.catalog.popularity[i] / best, 4)) for i in top]
            return Recommendation(items, unknown, True, self.version)
        rows, scores = self._score(np.asarray(known, dtype=np.int64), n)
        items = [Scored(self.catalog.item(int(i)), round(float(s), 4)) for i, s in zip(rows, scores)]
        return Recommendation(items, unknown, False, self.version)

    def _score(self, basket: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        query = self.factors[basket].mean(axis=0)
        candidates = np.asarray(self.index.get_nns_by_vector(query, self.candidates + len(basket)), dtype=np.int64)
        # Complements the basket's items were bought with join the candidates even when the embedding misses them.
        lo, hi = self.nbr_indptr[basket], self.nbr_indptr[basket + 1]
        nbr_rows = np.concatenate([self.nbr_index[a:b] for a, b in zip(lo, hi)]) if len(basket) else np.zeros(0)
        nbr_vals = np.concatenate([self.nbr_weight[a:b] for a, b in zip(lo, hi)]) if len(basket) else np.zeros(0)
        pool = np.union1d(candidates, nbr_rows)
        pool = pool[~np.isin(pool, basket)]
        svd = self.factors[pool] @ query
        cooc = np.zeros(len(pool), dtype=np.float32)
        pos = np.searchsorted(pool, nbr_rows)
        hit = (pos < len(pool)) & (pool[np.minimum(pos, len(pool) - 1)] == nbr_rows)
        np.add.at(cooc, pos[hit], nbr_vals[hit])
        score = self.svd_weight * svd + cooc / len(basket)
        if len(pool) > n:
            top = np.argpartition(-score, n - 1)[:n]
        else:
            top = np.arange(len(pool))
        order = top[np.lexsort((pool[top], -score[top]))]
        if len(order) < n:
            # A tiny catalog: pad with popular items so the answer has exactly n entries.
            extra = [i for i in self.catalog.most_popular() if i not in set(basket) and i not in set(pool[order])]
            return (np.concatenate([pool[order], extra[: n - len(order)]]).astype(np.int64),
                    np.concatenate([score[order], np.zeros(min(n - len(order), len(extra)))]))
        return pool[order], score[order]


def load_model(storage: Storage, version: str) -> Model:
    """Load one version, verifying every artifact against its manifest checksum; ModelUnavailable if it is damaged."""
    manifest = registry.verify(storage, version)

    def path(name: str) -> str:
        return str(storage.local_copy(registry.artifact_key(version, name)))

    try:
        catalog = Catalog.from_json(storage.read(registry.artifact_key(version, "catalog.json")))
        factors = np.load(path("factors.npy"), mmap_mode="r")
        index = AnnoyIndex(factors.shape[1], manifest["model"]["metric"])
        index.load(path("index.ann"))  # memory-mapped by Annoy
        arrays = [np.load(path(f"neighbors_{part}.npy"), mmap_mode="r") for part in ("indptr", "index", "weight")]
    except (OSError, ValueError, KeyError) as err:
        raise ModelUnavailable(f"model version {version} cannot be loaded: {err}") from None
    return Model(version, manifest, catalog, index, np.asarray(factors), *(np.asarray(a) for a in arrays))


class ModelHolder:
    """The model a process serves: loaded once, then swapped for a new active version when the pointer moves.

    The pointer is looked at no more than every poll_seconds; a new version is loaded and verified in full
    before one reference is switched, so requests in flight keep the model they started with.
    """

    def __init__(self, storage: Storage, poll_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.storage = storage
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.model: Model | None = None
        self.error: str | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether the pointer should be looked at again."""
        return self.clock() - self._checked_at >= self.poll_seconds

    def refresh(self) -> Model | None:
        """Look at the active pointer and load the version it names if it is not the one in memory."""
        if not self._lock.acquire(blocking=self.model is None):
            return self.model  # another thread is refreshing; keep serving what we have
        try:
            self._checked_at = self.clock()
            try:
                version = registry.active_version(self.storage)
                if self.model is None or self.model.version != version:
                    self.model = load_model(self.storage, version)
                self.error = None
            except (ModelUnavailable, NotFound) as err:
                # Keep serving the model in memory when a newer one is broken; report why otherwise.
                self.error = err.message
            return self.model
        finally:
            self._lock.release()

    def current(self) -> Model:
        """The model to answer with; ModelUnavailable (with the reason) when there is none."""
        model = self.model
        if model is None:
            raise ModelUnavailable(self.error or "no model loaded")
        return model
