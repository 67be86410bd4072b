"""Training: cleaned baskets -> weighted matrix -> truncated SVD -> Annoy index and re-ranking tables -> a model version."""

from __future__ import annotations

import hashlib
import json
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp
from annoy import AnnoyIndex
from tqdm import tqdm

from . import registry
from .catalog import Catalog
from .errors import DataFileError
from .ingest import Transactions, describe_report, load_transactions
from .registry import sha256_file
from .storage import Storage

MIN_ITEMS = 3
MIN_BASKETS = 2
ARTIFACTS = ("index.ann", "factors.npy", "neighbors_indptr.npy", "neighbors_index.npy", "neighbors_weight.npy",
             "catalog.json")


@dataclass(frozen=True)
class TrainingParams:
    """The hyperparameters of a model (stored in its manifest; the serving side reads the ones it needs)."""

    factors: int = 128
    popularity_damping: float = 0.5   # columns of the matrix scaled by popularity^-damping before the SVD
    n_trees: int = 40
    neighbors: int = 100              # top-K co-occurrence neighbours kept per item for re-ranking
    neighbor_damping: float = 0.5     # weight = cooc / (pop_i^(1-d) * pop_j^d)
    candidates: int = 200             # Annoy candidates per query before re-ranking
    svd_weight: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced and where it went."""

    version: str
    manifest: dict
    activated: bool
    seconds: float


Progress = Callable[[str], None]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def basket_matrix(tx: Transactions) -> sp.csr_matrix:
    """Binary baskets x items matrix (an item bought twice in one invoice counts once)."""
    n_baskets, n_items = len(tx.basket_ids), len(tx.item_codes)
    data = np.ones(len(tx.pair_item), dtype=np.float32)
    return sp.csr_matrix((data, (tx.pair_basket, tx.pair_item)), shape=(n_baskets, n_items))


def _orthonormalize(y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of y's columns: Cholesky QR done twice (fast matrix products, unlike LAPACK's
    Householder QR, which is many times slower on two busy cores); Householder only if y is rank deficient."""
    y = y.astype(np.float64)
    try:
        for _ in range(2):
            chol = np.linalg.cholesky(y.T @ y)
            y = np.linalg.solve(chol, y.T).T
        return y
    except np.linalg.LinAlgError:
        return np.linalg.qr(y)[0]


def truncated_svd(matrix: sp.csr_matrix, k: int, seed: int, power_iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and right singular vectors (k x items) by randomized range finding (Halko et al. 2011)."""
    rng = np.random.default_rng(seed)
    width = min(matrix.shape[1], k + 16)
    matrix = matrix.astype(np.float64)
    q = _orthonormalize(matrix @ rng.standard_normal((matrix.shape[1], width)))
    for _ in range(power_iterations):
        q = _orthonormalize(matrix.T @ q)
        q = _orthonormalize(matrix @ q)
    small = (matrix.T @ q).T  # width x items
    _, s, vt = np.linalg.svd(small, full_matrices=False)
    # Fix signs so the same input always gives the same vectors.
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    return s[:k].astype(np.float32), (vt[:k] * signs[:k, None]).astype(np.float32)


def cooccurrence_neighbors(matrix: sp.csr_matrix, k: int, damping: float, block: int = 2048,
                           progress: Callable[[int], None] = lambda _n: None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item, its k strongest co-purchased items as CSR arrays (indptr, index, weight).

    Weight of j for i = cooc(i, j) / (pop_i^(1-d) * pop_j^d): d = 0.5 is cosine; larger d favours rarer complements.
    Computed a block of items at a time so memory stays bounded at any catalog size.
    """
    csc = matrix.tocsc()
    pop = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
    pop[pop == 0] = 1
    n = matrix.shape[1]
    indptr = np.zeros(n + 1, dtype=np.int64)
    index_parts, weight_parts = [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        cooc = (csc[:, start:stop].T @ csc).tocsr()
        cooc.setdiag(0)
        cooc.eliminate_zeros()
        for r in range(stop - start):
            lo, hi = cooc.indptr[r], cooc.indptr[r + 1]
            cols, vals = cooc.indices[lo:hi], cooc.data[lo:hi]
            i = start + r
            w = vals / (pop[i] ** (1 - damping) * pop[cols] ** damping)
            if len(w) > k:
                top = np.argpartition(-w, k)[:k]
                cols, w = cols[top], w[top]
            order = np.lexsort((cols, -w))
            index_parts.append(cols[order].astype(np.int32))
            weight_parts.append(w[order].astype(np.float32))
            indptr[i + 1] = indptr[i] + len(order)
        progress(stop - start)
    return (indptr, np.concatenate(index_parts) if index_parts else np.zeros(0, np.int32),
            np.concatenate(weight_parts) if weight_parts else np.zeros(0, np.float32))


def build_model(tx: Transactions, params: TrainingParams, folder: Path, progress: Progress = print) -> dict:
    """Train on cleaned baskets, write every artifact into folder, and return the manifest's model part."""
    n_items = len(tx.item_codes)
    if n_items < MIN_ITEMS:
        raise DataFileError(f"only {n_items} distinct item(s) after cleaning; a model needs at least {MIN_ITEMS}")
    if len(tx.basket_ids) < MIN_BASKETS:
        raise DataFileError(f"only {len(tx.basket_ids)} basket(s) after cleaning; a model needs at least {MIN_BASKETS}")
    t = time.perf_counter()
    matrix = basket_matrix(tx)
    popularity = np.asarray(matrix.sum(axis=0)).ravel().astype(np.int64)
    weighted = matrix @ sp.diags(np.maximum(popularity, 1).astype(np.float32) ** -params.popularity_damping)
    progress(f"matrix: {matrix.shape[0]:,} baskets x {matrix.shape[1]:,} items, {matrix.nnz:,} entries "
             f"({time.perf_counter() - t:.1f} s)")

    t = time.perf_counter()
    k = max(1, min(params.factors, n_items - 1, matrix.shape[0] - 1))
    singular, vt = truncated_svd(weighted.tocsr(), k, params.seed)
    factors = np.ascontiguousarray(vt.T * singular)
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    factors = (factors / np.maximum(norms, 1e-12)).astype(np.float32)
    progress(f"svd: {k} factors ({time.perf_counter() - t:.1f} s)")

    t = time.perf_counter()
    with tqdm(total=n_items, desc="neighbours", unit=" items", leave=False, mininterval=0.5, disable=None) as bar:
        indptr, nbr_index, nbr_weight = cooccurrence_neighbors(matrix, params.neighbors, params.neighbor_damping,
                                                               progress=bar.update)
    progress(f"neighbours: {len(nbr_index):,} pairs, at most {params.neighbors} per item ({time.perf_counter() - t:.1f} s)")

    t = time.perf_counter()
    index = AnnoyIndex(k, "angular")
    index.set_seed(params.seed)
    for i in range(n_items):
        index.add_item(i, factors[i])
    index.build(params.n_trees, n_jobs=1)  # one job: several would make the trees depend on thread timing
    index.save(str(folder / "index.ann"))
    index.unload()
    progress(f"index: Annoy angular, {params.n_trees} trees ({time.perf_counter() - t:.1f} s)")

    np.save(folder / "factors.npy", factors)
    np.save(folder / "neighbors_indptr.npy", indptr)
    np.save(folder / "neighbors_index.npy", nbr_index)
    np.save(folder / "neighbors_weight.npy", nbr_weight)
    catalog = Catalog(tx.item_codes, tx.descriptions, popularity.tolist())
    (folder / "catalog.json").write_bytes(catalog.to_json())
    return {"factors": k, "metric": "angular"}


def new_version_id(now: datetime, content_hash: str) -> str:
    """Sortable by creation time (to the millisecond), then the content hash and a random tail for uniqueness."""
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{content_hash[:8]}{secrets.token_hex(2)}"


def publish_model(tx: Transactions, params: TrainingParams, storage: Storage, source: Path | None,
                  progress: Progress = print, now: Callable[[], datetime] = _utcnow) -> dict:
    """Build a model from cleaned baskets and write it to the storage as a new version (no pointer moves).

    Returns the manifest. The version becomes visible only when its manifest, written last, exists.
    """
    with tempfile.TemporaryDirectory(prefix="recommender-train-") as tmp:
        folder = Path(tmp)
        model_info = build_model(tx, params, folder, progress)
        artifacts = {name: sha256_file(folder / name) for name in ARTIFACTS}
        content = hashlib.sha256(json.dumps(artifacts, sort_keys=True).encode()).hexdigest()
        created = now()
        version = new_version_id(created, content)
        report = tx.report
        manifest = {
            "version": version,
            "created_at": created.isoformat(timespec="seconds"),
            "source": {"file": source.name, "sha256": sha256_file(source), "bytes": source.stat().st_size}
            if source else None,
            "counts": {"rows_read": report.rows_read, "rows_kept": report.rows_kept, "dropped": report.dropped,
                       "baskets": report.baskets, "guest_baskets": report.guest_baskets, "items": report.items,
                       "customers": report.customers},
            "params": asdict(params),
            "model": model_info,
            "artifacts": artifacts,
            "artifact_bytes": sum((folder / name).stat().st_size for name in ARTIFACTS),
            "content_sha256": content,
        }
        t = time.perf_counter()
        registry.publish(storage, version, folder, manifest)
    progress(f"saved version {version} to {storage.url} ({manifest['artifact_bytes'] / 1e6:.1f} MB, "
             f"{time.perf_counter() - t:.1f} s)")
    return manifest


def train(source: str | Path, storage: Storage, params: TrainingParams = TrainingParams(), activate: bool = True,
          keep_versions: int = 5, progress: Progress = print, now: Callable[[], datetime] = _utcnow) -> TrainingResult:
    """Read, clean, train and publish a new version; then activate it (make train) or stage it (make train_parallel).

    Nothing in the storage changes until the model is fully built, and the pointer moves only after
    every artifact is written, so a failed or killed training leaves the active model as it was.
    """
    started = time.perf_counter()
    source = Path(source)
    progress(f"reading {source}")
    t = time.perf_counter()
    with tqdm(desc="reading", unit=" rows", unit_scale=True, leave=False, mininterval=0.5, disable=None) as bar:
        tx = load_transactions(source, on_rows=bar.update)
    for line in describe_report(tx.report):
        progress(f"  {line}")
    progress(f"read and cleaned in {time.perf_counter() - t:.1f} s")
    manifest = publish_model(tx, params, storage, source, progress, now)
    version = manifest["version"]
    if activate:
        registry.activate(storage, version)
        progress(f"activated {version}")
    else:
        registry.stage(storage, version)
        progress(f"staged {version} (the active model is unchanged; `make load_after_parallel_train` activates it)")
    deleted = registry.prune(storage, keep_versions)
    if deleted:
        progress(f"pruned {len(deleted)} old version(s)")
    seconds = time.perf_counter() - started
    progress(f"done in {seconds:.1f} s: version {version}")
    return TrainingResult(version, manifest, activate, seconds)
