"""Commands on models: train, promote, activate, roll back, list versions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from recommender.cli.common import command, demo_events_hint, engine_arguments
from recommender.core import registry
from recommender.core.errors import DataFileError, ModelRefused, PointerDamaged, RecommenderError
from recommender.core.settings import Settings
from recommender.core.storage import Storage, open_storage


@command("train")
def _train(args: argparse.Namespace, settings: Settings) -> int:
    if args.engine == "single":
        from recommender.training import csv_fast
        from recommender.training.xlsx import prefetch

        prefetch(args.path)  # a workbook's parse runs beside the imports below (it releases the GIL)
        csv_fast.prefetch(args.path, settings.encoding)  # so does a csv's read
    from recommender.training.pipeline import TrainingParams, train
    from recommender.training.reranker import RerankParams

    params = TrainingParams(
        holdout=None if args.no_holdout else TrainingParams().holdout, rerank=RerankParams(enabled=args.rerank)
    )
    try:
        train_with(args, settings, params, train)
    except DataFileError as err:
        hint = demo_events_hint(settings, "make train PATH_TO_DATA=events:")
        if hint and "events" in args.path and err.message.startswith("no events recorded yet"):
            raise DataFileError(f"{err.message}; {hint}") from None
        raise
    return 0


def train_with(args: argparse.Namespace, settings: Settings, params: Any, train: Callable[..., Any]) -> None:
    train(
        args.path,
        open_storage(settings),
        params,
        activate=not args.stage,
        keep_versions=settings.keep_versions,
        engine=args.engine,
        spark_master=args.spark_master,
        force=args.force,
        gate_margin=settings.model_gate_margin,
        encoding=settings.encoding,
        max_memory_gb=settings.max_training_gb,
    )


@command("promote")
def _promote(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training import gate

    storage = open_storage(settings)
    try:
        pointer = registry.staged(storage)
    except PointerDamaged:
        pointer = None  # promote_staged says what is wrong with it
    if pointer is not None:
        try:
            gate.check(storage, pointer.version, args.force, settings.model_gate_margin, label="the staged model")
        except ModelRefused as err:
            raise ModelRefused(
                f"{err.message}. It stays staged: `make load_after_parallel_train FORCE=1` activates it anyway"
            ) from None
    version = registry.promote_staged(storage)
    print(f"activated staged version {version}")
    return 0


@command("activate")
def _activate(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training import gate

    storage = open_storage(settings)
    version = registry.find_version(storage, args.version)
    registry.verify(storage, version)  # a damaged version is refused, naming what is damaged
    try:
        pointer = registry.active(storage)
    except PointerDamaged:
        pointer = None  # activating replaces it, and says so
    if pointer is not None and pointer.version == version:
        print(f"version {version} is already active")
        return 0
    try:
        gate.check(storage, version, args.force, settings.model_gate_margin, label="the chosen model")
    except ModelRefused as err:
        raise ModelRefused(
            f"{err.message}. Nothing changed: `make activate VERSION={version} FORCE=1` activates it anyway"
        ) from None
    registry.activate(storage, version)
    unstaged = registry.unstage(storage, version)
    print(f"activated version {version}" + (" (it was staged: nothing is staged now)" if unstaged else ""))
    return 0


@command("rollback")
def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    version = registry.rollback(open_storage(settings))
    print(f"re-activated version {version}")
    return 0


VERSION_COLUMNS = ("VERSION", "STATE", "FILE", "DATES", "ROWS", "PRODUCTS", "HR@10", "ENGINE")


@command("versions")
def _versions(args: argparse.Namespace, settings: Settings) -> int:
    storage = open_storage(settings)
    pointers, damaged = {}, []
    for mark, read in (("active", registry.active), ("staged", registry.staged)):
        try:
            pointers[mark] = read(storage)
        except PointerDamaged as err:  # still list the versions: they are what a repair needs
            damaged.append(err.message)
    versions = registry.list_versions(storage)
    if not versions:
        print(f"no model versions in {storage.url}")
    rows, problems = [VERSION_COLUMNS], [""]
    for v in versions:
        marks = [m for m, p in pointers.items() if p and p.version == v]
        rows.append((v, ", ".join(marks) or "-", *summary(storage, v)))
        problems.append(registry.version_problem(storage, v) or "")
    if versions:
        widths = [max(len(row[i]) for row in rows) for i in range(len(VERSION_COLUMNS))]
        for row, problem in zip(rows, problems):
            print(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                + (f"  {problem}" * bool(problem))
            )
    for message in damaged:
        print(f"error: {message}", file=sys.stderr)
    return 1 if damaged else 0


def summary(storage: Storage, version: str) -> tuple[str, ...]:
    """A version's cells for `versions` after VERSION and STATE: the training file, its dates, rows, products,
    held-out HR@10 and engine; "-" for what its manifest does not say (older versions, unreadable manifests)."""
    try:
        manifest = registry.read_manifest(storage, version)
    except RecommenderError:
        return ("-",) * (len(VERSION_COLUMNS) - 2)

    def part(*path: str) -> object:
        value: object = manifest
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
        return value

    def number(value: object, form: str = ",") -> str:
        return format(value, form) if isinstance(value, int | float) and not isinstance(value, bool) else "-"

    period = manifest.get("period", {})
    if period is None:
        dates = "undated"
    elif isinstance(period.get("first"), str) and isinstance(period.get("last"), str):
        dates = f"{period['first'][:10]} to {period['last'][:10]}"
    else:
        dates = "-"
    return (
        str(part("source", "file") or "-"),
        dates,
        number(part("counts", "rows_read")),
        number(part("counts", "items")),
        number(part("evaluation", "model", "hr"), ".3f"),
        str(part("engine", "name") or "-"),
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The models' sub-commands."""
    p = sub.add_parser(
        "train", help="train a model on a purchase-history file, folder of parts or s3:// location and activate it"
    )
    p.add_argument(
        "path", help="a file, folder or s3:// location; events: (the recorded purchases); or orders.csv,events:"
    )
    p.add_argument("--stage", action="store_true", help="stage the new model instead of activating it")
    p.add_argument(
        "--force",
        action="store_true",
        help="activate it even when it is clearly worse than the active model on its held-out baskets",
    )
    p.add_argument(
        "--no-holdout",
        action="store_true",
        help="train on every basket: no held-out figures, calibration or comparison with the active model "
        "(which it then replaces only with --force)",
    )
    p.add_argument(
        "--rerank",
        action="store_true",
        help="also train the learned re-ranker (about 5%% better HR@10 on Online Retail, but about 0.5 ms of CPU "
        "per answer instead of 0.05 ms, and some 19 times the training time)",
    )
    engine_arguments(p)
    p = sub.add_parser(
        "promote", help="activate the staged model after verifying it and comparing it with the active one"
    )
    p.add_argument("--force", action="store_true", help="activate it even when it is clearly worse than the active one")
    p = sub.add_parser(
        "activate",
        help="activate a stored model version (after verifying it and comparing it with the active one)",
    )
    p.add_argument("version", help="a version as `versions` lists it, or a unique beginning of one")
    p.add_argument("--force", action="store_true", help="activate it even when the comparison refuses it")
    sub.add_parser("rollback", help="re-activate the previously active model")
    sub.add_parser(
        "versions",
        help="list model versions: state, training file, its dates, rows, products, held-out HR@10, engine",
    )
