"""Training: cleaned baskets and customer histories -> item-item table and SVD embeddings -> Annoy index -> a version."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import scipy.sparse as sp
from annoy import AnnoyIndex
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from recommender.core import registry
from recommender.core.errors import ConfigError, DataFileError, ModelRefused, StorageError
from recommender.core.items import ITEMS_FILE, Items
from recommender.core.registry import new_version_id, sha256_file, utcnow
from recommender.core.storage import Storage
from recommender.training import budget, copurchase, gate, holdout, neighbors, sample_invoices
from recommender.training.ingest import (
    CleaningReport,
    Transactions,
    describe_report,
    load_transactions,
    reorder_items,
)

MIN_ITEMS = 3
MIN_BASKETS = 2
# Up to this many matrix entries, the embedding is computed beside the item-item table (peak memory adds up).
OVERLAP_MAX_ENTRIES = 5_000_000
# table_count.npy: per table entry, the training baskets holding both items (the reasons' `baskets`);
# item_price.npy: per item, its most recent unit price in the file (NaN when unknown; the feed's default price).
ARTIFACTS = ("index.ann", "table_indptr.npy", "table_target.npy", "table_weight.npy", "table_count.npy",
             "item_price.npy", ITEMS_FILE, sample_invoices.SAMPLES)


@dataclass(frozen=True)
class TrainingParams:
    """The hyperparameters of a model, chosen on a validation split (README, Quality); stored in its manifest."""

    # Rows of the matrix: one per basket, plus one per returning customer (their whole history, capped).
    customer_min_baskets: int = 2
    customer_max_items: int = 500     # bounds the co-purchase pairs a wholesale customer adds
    # Item-item table: EASE's regression restricted to each item's top-K neighbours; re-ranks the candidates.
    neighbors: int = 100
    ridge_share: float = 0.2          # lambda = ridge_share * mean item count: scale-free across datasets
    # Annoy over SVD item embeddings: candidate retrieval.
    factors: int = 128
    popularity_damping: float = 0.5   # item columns scaled by count^-damping before the SVD
    svd_iterations: int = 4
    n_trees: int = 20
    # Query time: the candidates are each basket item's nearest items in the Annoy index.
    candidates_per_item: int = 50
    search_k_per_item: int = 1000
    seed: int = 0
    # The most recent baskets kept out of training to measure the model (None: train on everything, unmeasured).
    holdout: holdout.HoldoutPolicy | None = field(default_factory=holdout.HoldoutPolicy)


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced and where it went."""

    version: str
    manifest: dict
    activated: bool
    seconds: float


Progress = Callable[[str], None]


def basket_matrix(tx: Transactions) -> sp.csr_matrix:
    """Binary baskets x items matrix (an item bought twice in one invoice counts once)."""
    n_baskets, n_items = len(tx.basket_ids), len(tx.item_codes)
    data = np.ones(len(tx.pair_item), dtype=np.float32)
    return sp.csr_matrix((data, (tx.pair_basket, tx.pair_item)), shape=(n_baskets, n_items))


def customer_matrix(tx: Transactions, min_baskets: int, max_items: int) -> sp.csr_matrix | None:
    """One binary row per returning customer: the items of their whole history, at most max_items of them (the
    ones they bought in most baskets, ties by item row); None without returning customers."""
    customer = tx.basket_customer[tx.pair_basket].astype(np.int64)
    known = customer >= 0
    if not known.any():
        return None
    n = len(tx.item_codes)
    keys, counts = np.unique(customer[known] * n + tx.pair_item[known], return_counts=True)
    cust, item = keys // n, keys % n
    baskets = np.bincount(tx.basket_customer[tx.basket_customer >= 0])
    keep = baskets[cust] >= min_baskets
    cust, item, counts = cust[keep], item[keep], counts[keep]
    if not len(cust):
        return None
    order = np.lexsort((item, -counts, cust))
    cust, item = cust[order], item[order]
    first = np.searchsorted(cust, cust)  # start of each customer's run
    capped = np.arange(len(cust)) - first < max_items
    rows = np.unique(cust[capped], return_inverse=True)[1]
    return sp.csr_matrix((np.ones(int(capped.sum()), dtype=np.float32), (rows, item[capped])),
                         shape=(int(rows.max()) + 1, n))


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


def item_embeddings(matrix: sp.csr_matrix, k: int, seed: int, iterations: int = 4) -> np.ndarray:
    """The top-k right singular vectors of matrix (items x k, unit rows), by randomized subspace iteration.

    Only items x (k + 16) blocks are dense, so this runs at any number of baskets; the signs are fixed so
    the same input always gives the same vectors.
    """
    x = matrix.astype(np.float64)
    xt = x.T.tocsr()

    def image_gram(q: np.ndarray) -> np.ndarray:
        y = x @ q
        return y.T @ y
    return embeddings_from_products(matrix.shape[1], k, seed, iterations, lambda q: xt @ (x @ q), image_gram)


def embeddings_from_products(n_items: int, k: int, seed: int, iterations: int,
                             normal: Callable[[np.ndarray], np.ndarray],
                             image_gram: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """item_embeddings given only the products with the matrix X: normal(q) = X'(X q) and image_gram(q) =
    (X q)'(X q). The Spark engine computes them on its executors and this runs on the driver, items x (k + 16)."""
    rng = np.random.default_rng(seed)
    width = min(n_items, k + 16)
    q = _orthonormalize(rng.standard_normal((n_items, width)))
    for _ in range(iterations):
        q = _orthonormalize(normal(q))
    values, vectors = np.linalg.eigh(image_gram(q))
    top = np.argsort(-values)[:k]
    v = q @ vectors[:, top]
    signs = np.sign(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])])
    v *= np.where(signs == 0, 1, signs)
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def column_scale(counts: np.ndarray, damping: float) -> np.ndarray:
    """The factor of each item column before the SVD: count^-damping (popular items damped)."""
    return np.maximum(counts, 1) ** -damping


def ridge_lambda(counts: np.ndarray, params: TrainingParams) -> float:
    """The ridge of the item-item regressions: a share of the mean item count (scale-free across datasets)."""
    return params.ridge_share * float(counts[counts > 0].mean())


def factors_for(n_items: int, n_rows: int, params: TrainingParams) -> int:
    """The SVD rank: the configured factors, bounded by the matrix's size."""
    return max(1, min(params.factors, n_items - 1, n_rows - 1))


def popularity_order(popularity: np.ndarray) -> np.ndarray:
    """Items from the most to the least popular, ties in order of first appearance (their current numbering)."""
    return np.argsort(-popularity, kind="stable")


def check_size(n_items: int, n_baskets: int) -> None:
    """DataFileError when the cleaned data is too small for a model."""
    if n_items < MIN_ITEMS:
        raise DataFileError(f"only {n_items} distinct item(s) after cleaning; a model needs at least {MIN_ITEMS}")
    if n_baskets < MIN_BASKETS:
        raise DataFileError(f"only {n_baskets} basket(s) after cleaning; a model needs at least {MIN_BASKETS}")


@contextmanager
def _stage(progress: Progress, text: str) -> Iterator[None]:
    """Report a training stage with its duration when it ends."""
    t = time.perf_counter()
    yield
    progress(f"{text} ({time.perf_counter() - t:.1f} s)")


def build_model(tx: Transactions, params: TrainingParams, folder: Path, progress: Progress = print,
                near: dict[str, list[int]] | None = None) -> dict:
    """Train on cleaned baskets, write every artifact into folder, and return the manifest's model part.
    DataFileError when nothing in them was bought together.

    With near ({code: []} for some items), the thread that builds the Annoy index, when it runs beside the
    item-item table, also fills in each of those items' nearest items (model rows) while it would otherwise wait:
    what serving asks Annoy first, asked for free (the holdout's queries use it).
    """
    check_size(len(tx.item_codes), len(tx.basket_ids))
    # One BLAS thread: the work is many small solves, and OpenBLAS threads that spin while another process
    # holds the other core made training several times slower here (a server may be running beside it).
    with threadpool_limits(limits=1):
        return _build(tx, params, folder, progress, near)


def _build(tx: Transactions, params: TrainingParams, folder: Path, progress: Progress,
           near: dict[str, list[int]] | None) -> dict:
    n_items = len(tx.item_codes)
    # Number the items from the most to the least popular (ties keep file order): the serving side breaks
    # score ties by popularity for free.
    tx = reorder_items(tx, popularity_order(np.bincount(tx.pair_item, minlength=n_items)))
    baskets = basket_matrix(tx)
    customers = customer_matrix(tx, params.customer_min_baskets, params.customer_max_items)
    rows = baskets if customers is None else sp.vstack([baskets, customers]).tocsr()
    progress(f"matrix: {baskets.shape[0]:,} baskets + {rows.shape[0] - baskets.shape[0]:,} returning customers' "
             f"histories x {n_items:,} items, {rows.nnz:,} entries")
    signal = copurchase.measure(rows.indptr, rows.indices, n_items)
    copurchase.check(signal, baskets.shape[0], progress)

    counts = np.bincount(rows.indices, minlength=n_items).astype(np.float64)  # rows holding each item
    k = factors_for(n_items, rows.shape[0], params)
    # The embedding and its index need nothing from the item-item table: on a dataset that fits twice in memory
    # they run on the other core meanwhile (each with one BLAS thread); on a large one they wait their turn.
    overlap = rows.nnz <= OVERLAP_MAX_ENTRIES
    with ThreadPoolExecutor(max_workers=1) as pool:
        # The table's co-occurrence is the baskets' gram (which the reasons' counts need too) plus the customer
        # histories' one: each computed once, the second on the other core before the embedding.
        customer_gram = pool.submit(neighbors.gram, customers) if overlap and customers is not None else None
        embedding = pool.submit(_embed_and_index, rows, counts, k, params, folder, progress,
                                _prime_rows(tx, near)) if overlap else None
        k_nbrs = min(params.neighbors, n_items - 1)
        ridge = ridge_lambda(counts, params)
        basket_gram = None
        with _stage(progress, f"item-item table: top {k_nbrs} neighbours per item, local ridge regression"):
            if overlap:
                basket_gram = neighbors.gram(baskets)
                g = (basket_gram if customer_gram is None
                     else neighbors.combine(basket_gram, customer_gram.result()))
            else:  # a large dataset: one gram at a time, the reasons' counts a block at a time later
                g = neighbors.gram(rows)
            table_index = neighbors.top_neighbors(g, k_nbrs)
            with tqdm(total=n_items, desc="regression", unit=" items", leave=False, disable=None) as bar:
                table_weight = neighbors.local_regression(g, table_index, ridge, progress=bar.update)
            del g
        if embedding is None:
            _embed_and_index(rows, counts, k, params, folder, progress)
        else:
            embedding.result()

    def pair_counts(indptr: np.ndarray, target: np.ndarray) -> np.ndarray:
        return (neighbors.counts_from_gram(basket_gram, indptr, target) if basket_gram is not None
                else neighbors.table_counts(baskets, indptr, target))

    popularity = np.asarray(baskets.sum(axis=0)).ravel().astype(np.int64)
    chosen = sample_invoices.draw(tx.basket_ids, tx.pair_basket, tx.pair_item, tx.item_codes, tx.basket_time,
                                  seed=params.seed)
    return finish_model(folder, ModelParts(tx.item_codes, tx.descriptions, popularity, table_index, table_weight,
                                           k=k, ridge=ridge, baskets=baskets.shape[0],
                                           customer_rows=rows.shape[0] - baskets.shape[0], samples=chosen,
                                           pair_counts=pair_counts, prices=tx.item_prices, signal=signal.as_dict()),
                         params)


@dataclass
class ModelParts:
    """What an engine hands to the driver-side finishing: items in model order (most popular first), baskets
    per item, the item-item table by target (items x K neighbours and weights), the sample invoices, how to count
    the baskets of each table entry, the items' prices, and the SVD embeddings when the index is not written yet."""

    item_codes: list[str]
    descriptions: list[str]
    popularity: np.ndarray      # int64 baskets holding each item
    table_index: np.ndarray     # int32 items x K, -1 pads
    table_weight: np.ndarray    # float32 items x K
    k: int
    ridge: float
    baskets: int
    customer_rows: int
    samples: list[dict]
    pair_counts: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (indptr, target) by source -> baskets per entry
    prices: np.ndarray | None = None      # float64 per item, NaN unknown; None: the input has no UnitPrice
    signal: dict | None = None            # copurchase.measure's figures
    embeddings: np.ndarray | None = None


def finish_model(folder: Path, parts: ModelParts, params: TrainingParams, progress: Progress = print) -> dict:
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
    sample_invoices.write(folder / sample_invoices.SAMPLES, parts.samples)
    return {
        "baskets": parts.baskets,
        "signal": parts.signal,
        "factors": parts.k, "metric": "angular", "neighbors": int(parts.table_index.shape[1]),
        "ridge": round(parts.ridge, 4), "customer_rows": parts.customer_rows, "table_entries": int(len(target)),
        "query": {"candidates_per_item": params.candidates_per_item, "search_k_per_item": params.search_k_per_item},
    }


def _prime_rows(tx: Transactions, near: dict[str, list[int]] | None) -> dict[int, list[int]] | None:
    """The model rows of the codes whose neighbours are asked for, each with the list to fill."""
    if near is None:
        return None
    row = {code: i for i, code in enumerate(tx.item_codes)}
    return {row[code]: found for code, found in near.items() if code in row}


def _embed_and_index(rows: sp.csr_matrix, counts: np.ndarray, k: int, params: TrainingParams, folder: Path,
                     progress: Progress, near: dict[int, list[int]] | None = None) -> None:
    """SVD item embeddings of the damped matrix, and the Annoy index over them, written to folder."""
    with _stage(progress, f"svd: {k} factors"):
        damped = (rows @ sp.diags(column_scale(counts, params.popularity_damping))).tocsr()
        embeddings = item_embeddings(damped, k, params.seed, params.svd_iterations)
    write_index(embeddings, params, folder, progress, near)


def write_index(embeddings: np.ndarray, params: TrainingParams, folder: Path, progress: Progress,
                near: dict[int, list[int]] | None = None) -> None:
    """The Annoy angular index over the item embeddings, written to folder/index.ann; with near, each listed
    row's nearest items are filled in while the index is loaded."""
    with _stage(progress, f"index: Annoy angular, {params.n_trees} trees"):
        index = AnnoyIndex(embeddings.shape[1], "angular")
        index.set_seed(params.seed)
        for i in range(len(embeddings)):
            index.add_item(i, embeddings[i])
        index.build(params.n_trees, n_jobs=1)  # one job: several would make the trees depend on thread timing
        with _quiet_stderr():  # Annoy prints its write errors besides raising them: the error says it once
            index.save(str(folder / "index.ann"))
    for i, found in (near or {}).items():
        found[:] = index.get_nns_by_item(i, params.candidates_per_item + 1, params.search_k_per_item)
    index.unload()


def _period(basket_time: np.ndarray) -> dict | None:
    """The first and last purchase a model learned from (None for a file without dates)."""
    dated = basket_time[~np.isnat(basket_time)]
    if not len(dated):
        return None
    return {"first": str(dated.min()), "last": str(dated.max())}


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (what C++ code prints) for the duration."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder for a model's files, removed afterwards with whatever it holds; a full or failing disk
    there becomes one StorageError saying what to do, not a traceback."""
    try:
        with tempfile.TemporaryDirectory(prefix="recommender-train-") as tmp:
            yield Path(tmp)
    except OSError as err:
        raise StorageError(f"cannot write the model's files in {tempfile.gettempdir()}: {err.strerror or err}; free "
                           f"some space there, or set TMPDIR to a folder on a disk with more") from None


def publish_model(tx: Transactions, params: TrainingParams, storage: Storage, source: str | Path | None,
                  progress: Progress = print, now: Callable[[], datetime] = utcnow) -> dict:
    """Build a model from cleaned baskets and write it to the storage as a new version (no pointer moves).

    Returns the manifest. The version becomes visible only when its manifest, written last, exists.
    """
    from recommender.training.sources import fingerprint, resolve

    source_info = fingerprint(resolve(source)) if source else None
    return publish_built(_single_engine(tx, params, progress), params, storage, source_info, progress, now)


SINGLE_ENGINE = {"name": "single"}


@dataclass
class Built:
    """What an engine's training left beside the artifacts in the version's folder, for the manifest."""

    model: dict                     # the manifest's model part (finish_model)
    report: CleaningReport          # the cleaning report of the whole input
    engine: dict                    # {"name": "single"} or Spark's name, version and master
    period: dict | None             # first and last purchase trained on
    evaluation: dict | None = None  # the holdout's figures
    extra: tuple[str, ...] = ()     # artifacts beyond ARTIFACTS (the holdout's)


def announce_holdout(held: holdout.HeldOut, separate: bool, progress: Progress) -> None:
    """Say which baskets measure the model, and how (both engines, same words)."""
    since = f" (from {str(held.cutoff)[:16].replace('T', ' ')})" if held.cutoff is not None else ""
    how = ("a second model is trained without them" if separate else
           "they are kept out of training (too few to matter)")
    progress(f"holdout: the {len(held.basket_ids):,} most recent baskets{since} measure the model: {how}")


def assess_holdout(folder: Path, model_info: dict, held: holdout.HeldOut | None, params: TrainingParams,
                   progress: Progress, near: dict[str, list[int]] | None = None) -> tuple[dict | None, tuple[str, ...]]:
    """The holdout's evaluation and extra artifacts for a model written in folder (both engines)."""
    if held is None:
        return None, ()
    with _stage(progress, "holdout: measured through Model.recommend, confidence calibrated"):
        evaluation, extra = holdout.assess(folder, model_info, held, params.seed, progress, near)
    progress(f"held out: {holdout.describe(evaluation)}")
    return evaluation, tuple(extra)


def _single_engine(tx: Transactions, params: TrainingParams, progress: Progress) -> Callable[[Path], Built]:
    """The single-machine trainer as an engine: the model, measured on the most recent baskets (build_and_measure)."""
    def fill(folder: Path) -> Built:
        train_tx, held = holdout.split(tx, params.holdout) if params.holdout else (tx, None)
        done = build_and_measure(lambda out, say: build_model(tx, params, out, say),
                                 lambda out, near, say: build_model(train_tx, params, out, say, near),
                                 held, len(tx.basket_ids), params, folder, progress)
        period = _period((tx if done.learned_all else train_tx).basket_time)
        return Built(done.model, tx.report, SINGLE_ENGINE, period, done.evaluation, done.extra)
    return fill


@dataclass(frozen=True)
class Measured:
    """A built model (the manifest's model part), its held-out figures and extra artifacts, and whether it learned
    from every basket (otherwise the held-out ones were kept out of it)."""

    model: dict
    evaluation: dict | None
    extra: tuple[str, ...]
    learned_all: bool


def build_and_measure(build_all: Callable[[Path, Progress], dict],
                      build_without: Callable[[Path, dict[str, list[int]], Progress], dict],
                      held: holdout.HeldOut | None, n_baskets: int, params: TrainingParams, folder: Path,
                      progress: Progress) -> Measured:
    """Build the model into folder and measure it on the held-out baskets, for both engines. build_all trains on
    every basket, build_without without the held-out ones (given the codes whose Annoy neighbours to fill in).

    A model cannot be measured on baskets it learned from. When the held-out baskets are a noticeable share of
    the file (HoldoutPolicy.separate), the published model learns from all of them and a second one, trained the
    same way without them, is measured: its figures, cases and confidence calibration go with the published
    version. Otherwise the measured model is the published one. Without a holdout (or when nothing before the
    held-out baskets was bought together) the model learns from everything, unmeasured."""
    if held is None:
        return Measured(build_all(folder, progress), None, (), True)
    separate = params.holdout.separate(len(held.basket_ids), n_baskets)
    announce_holdout(held, separate, progress)
    near: dict[str, list[int]] = {code: [] for b in held.items for code in b}
    if not separate:
        try:
            model_info = build_without(folder, near, progress)
        except DataFileError as err:
            _not_measured(err, progress)
            return Measured(build_all(folder, progress), None, (), True)
        evaluation, extra = assess_holdout(folder, model_info, held, params, progress, near)
        if evaluation is not None:
            evaluation["measured"] = "the published model, trained without the held-out baskets"
        return Measured(model_info, evaluation, extra, False)
    model_info = build_all(folder, progress)
    started = time.perf_counter()
    with scratch_folder() as measured:
        try:
            measured_info = build_without(measured, near, lambda text: progress(f"  holdout model: {text}"))
        except DataFileError as err:
            _not_measured(err, progress)
            return Measured(model_info, None, (), True)
        built = time.perf_counter() - started
        evaluation, extra = assess_holdout(measured, measured_info, held, params, progress, near)
        for name in extra:
            shutil.copyfile(measured / name, folder / name)
    if evaluation is not None:
        evaluation["measured"] = "a second model, trained the same way without the held-out baskets"
        evaluation["model_seconds"] = round(built, 2)
    return Measured(model_info, evaluation, extra, True)


def _not_measured(err: DataFileError, progress: Progress) -> None:
    """Say why the model goes unmeasured (e.g. every co-purchase is among the held-out baskets): it then learns
    from everything."""
    progress(f"holdout: not measured: without the held-out baskets, {err.message}")


def publish_built(fill: Callable[[Path], Built], params: TrainingParams, storage: Storage, source_info: dict | None,
                  progress: Progress = print, now: Callable[[], datetime] = utcnow) -> dict:
    """Let an engine write a model's artifacts into a fresh folder, then publish it as a new version with its
    manifest, last."""
    with scratch_folder() as folder:
        built = fill(folder)
        names = (*ARTIFACTS, *built.extra)
        artifacts = {name: sha256_file(folder / name) for name in names}
        content = hashlib.sha256(json.dumps(artifacts, sort_keys=True).encode()).hexdigest()
        created = now()
        version = new_version_id(created, content)
        report = built.report
        manifest = {
            "version": version,
            "created_at": created.isoformat(timespec="seconds"),
            "source": source_info,
            "engine": built.engine,
            "counts": {"rows_read": report.rows_read, "rows_kept": report.rows_kept, "dropped": report.dropped,
                       "baskets": report.baskets, "guest_baskets": report.guest_baskets, "items": report.items,
                       "customers": report.customers},
            "params": asdict(params),
            "period": built.period,
            "model": built.model,
            "artifacts": artifacts,
            "artifact_bytes": sum((folder / name).stat().st_size for name in names),
            "content_sha256": content,
        }
        if built.evaluation is not None:
            manifest["evaluation"] = built.evaluation
        t = time.perf_counter()
        registry.publish(storage, version, folder, manifest)
    progress(f"saved version {version} to {storage.url} ({manifest['artifact_bytes'] / 1e6:.1f} MB, "
             f"{time.perf_counter() - t:.1f} s)")
    return manifest


ENGINES = ("single", "spark")


def train(source: str | Path, storage: Storage, params: TrainingParams = TrainingParams(), activate: bool = True,
          keep_versions: int = 5, progress: Progress = print, now: Callable[[], datetime] = utcnow,
          engine: str = "single", spark_master: str | None = None, force: bool = False,
          gate_margin: float = gate.MARGIN, encoding: str = "utf-8", max_memory_gb: float | None = None
          ) -> TrainingResult:
    """Read, clean, train and publish a new version; then activate it (make train) or stage it (make train_parallel).

    engine "single" trains in this process; "spark" runs the same recipe as a Spark job (training/distributed.py,
    imported only then) and finishes it here. Nothing in the storage changes until the model is fully built, and
    the pointer moves only after every artifact is written, so a failed or killed training leaves the active
    model as it was. Before activation the new model is compared with the active one (training/gate.py): when it
    is clearly worse it is staged instead and ModelRefused raised, unless force.
    """
    from recommender.training.sources import fingerprint, resolve

    started = time.perf_counter()
    if engine not in ENGINES:
        raise ConfigError(f"unknown training engine {engine!r}: use {' or '.join(ENGINES)}")
    progress(f"reading {source}")
    resolved = resolve(source)
    if engine == "spark":
        from recommender.training import distributed

        fill = distributed.trainer(resolved, params, progress, master=spark_master, encoding=encoding)
    else:
        t = time.perf_counter()
        with tqdm(desc="reading", unit=" rows", unit_scale=True, leave=False, mininterval=0.5, disable=None) as bar:
            tx = load_transactions(source, on_rows=bar.update, encoding=encoding)
        for line in describe_report(tx.report):
            progress(f"  {line}")
        progress(f"read and cleaned in {time.perf_counter() - t:.1f} s")
        budget.check_memory(tx, params, max_memory_gb, progress)  # before the heavy stages, not after minutes of them
        fill = _single_engine(tx, params, progress)
    manifest = publish_built(fill, params, storage, fingerprint(resolved), progress, now)
    version = manifest["version"]
    if activate:
        try:
            gate.check(storage, version, force, gate_margin, progress)
        except ModelRefused as err:
            registry.stage(storage, version)
            raise ModelRefused(f"{err.message}. It is staged instead: `make load_after_parallel_train FORCE=1` "
                               f"activates it anyway") from None
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
