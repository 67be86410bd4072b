"""Training's orchestration: read with the chosen engine, publish the built model as a version, then activate it
through the quality gate or stage it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from recommender.core import experiments, registry
from recommender.core.errors import ConfigError, ModelRefused
from recommender.core.registry import new_version_id, sha256_file, utcnow
from recommender.core.storage import Storage
from recommender.training import gate
from recommender.training.engine import Built, scratch_folder, single_engine, single_trainer
from recommender.training.ingest import Transactions
from recommender.training.recipe import ARTIFACTS, Progress, TrainingParams, say


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced and where it went."""

    version: str
    manifest: dict
    activated: bool
    seconds: float


def publish_model(
    tx: Transactions,
    params: TrainingParams,
    storage: Storage,
    source: str | Path | None,
    progress: Progress = say,
    now: Callable[[], datetime] = utcnow,
) -> dict:
    """Build a model from cleaned baskets and write it to the storage as a new version (no pointer moves).

    Returns the manifest. The version becomes visible only when its manifest, written last, exists.
    """
    from recommender.training.sources import fingerprint, resolve

    source_info = fingerprint(resolve(source)) if source else None
    return publish_built(single_engine(tx, params, progress), params, storage, source_info, progress, now)


def publish_built(
    fill: Callable[[Path], Built],
    params: TrainingParams,
    storage: Storage,
    source_info: dict | None,
    progress: Progress = say,
    now: Callable[[], datetime] = utcnow,
) -> dict:
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
            "counts": {
                "rows_read": report.rows_read,
                "rows_kept": report.rows_kept,
                "dropped": report.dropped,
                "baskets": report.baskets,
                "guest_baskets": report.guest_baskets,
                "items": report.items,
                "customers": report.customers,
            },
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
    progress(
        f"saved version {version} to {storage.url} ({manifest['artifact_bytes'] / 1e6:.1f} MB, "
        f"{time.perf_counter() - t:.1f} s)"
    )
    return manifest


ENGINES = ("single", "spark")


def train(
    source: str | Path,
    storage: Storage,
    params: TrainingParams = TrainingParams(),
    activate: bool = True,
    keep_versions: int = 5,
    progress: Progress = say,
    now: Callable[[], datetime] = utcnow,
    engine: str = "single",
    spark_master: str | None = None,
    force: bool = False,
    gate_margin: float = gate.MARGIN,
    encoding: str = "utf-8",
    max_memory_gb: float | None = None,
) -> TrainingResult:
    """Read, clean, train and publish a new version; then activate it (make train) or stage it (make train_parallel).

    engine "single" trains in this process; "spark" runs the same recipe as a Spark job (training/distributed.py,
    imported only then) and finishes it here. Nothing in the storage changes until the model is fully built, and
    the pointer moves only after every artifact is written, so a failed or killed training leaves the active
    model as it was. Before activation the new model is compared with the active one (training/gate.py): when it
    is clearly worse it is staged instead and ModelRefused raised, unless force.
    """
    from recommender.training.event_tables import with_store
    from recommender.training.sources import EVENTS_KIND, fingerprint, resolve

    started = time.perf_counter()
    if engine not in ENGINES:
        raise ConfigError(f"unknown training engine {engine!r}: use {' or '.join(ENGINES)}")
    source = with_store(os.fspath(source), storage.url)  # a bare events: is this storage's event log
    progress(f"reading {source}")
    resolved = resolve(source)
    if engine == "spark" and any(part.kind == EVENTS_KIND for part in resolved.parts):
        raise ConfigError("training from events: runs on this machine: leave out ENGINE=spark")
    if engine == "spark":
        from recommender.training import distributed

        fill = distributed.trainer(resolved, params, progress, master=spark_master, encoding=encoding)
    else:
        fill = single_trainer(source, params, progress, encoding, max_memory_gb)
    manifest = publish_built(fill, params, storage, fingerprint(resolved), progress, now)
    version = manifest["version"]
    if activate:
        try:
            gate.check(storage, version, force, gate_margin, progress)
        except ModelRefused as err:
            registry.stage(storage, version)
            raise ModelRefused(
                f"{err.message}. It is staged instead: `make load_after_parallel_train FORCE=1` activates it anyway"
            ) from None
        registry.activate(storage, version)
        progress(f"activated {version}")
    else:
        registry.stage(storage, version)
        progress(f"staged {version} (the active model is unchanged; `make load_after_parallel_train` activates it)")
    deleted = registry.prune(storage, keep_versions, in_use=experiments.versions_in_use(storage))
    if deleted:
        progress(f"pruned {len(deleted)} old version(s)")
    seconds = time.perf_counter() - started
    progress(f"done in {seconds:.1f} s: version {version}")
    return TrainingResult(version, manifest, activate, seconds)
