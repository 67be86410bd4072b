"""What a training engine hands to publishing (Built), the holdout protocol both engines follow (build_and_measure),
and the single-machine engine."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from recommender.core.errors import DataFileError, StorageError
from recommender.serving.model import open_model
from recommender.serving.reranker import RERANK_FILE
from recommender.training import budget, forked, holdout, paired, reranker
from recommender.training.ingest import CleaningReport, Transactions, describe_report, load_transactions
from recommender.training.recipe import Progress, TrainingParams, build_model, purchase_period, say, stage

SINGLE_ENGINE = {"name": "single"}


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder for a model's files, removed afterwards with whatever it holds; a full or failing disk
    there becomes one StorageError saying what to do, not a traceback."""
    try:
        with tempfile.TemporaryDirectory(prefix="recommender-train-") as tmp:
            yield Path(tmp)
    except OSError as err:
        reason = err.strerror or str(err)
        if err.errno is None and " requested and " in reason:
            # numpy reports a full disk as a short write ("N requested and M written"), without ENOSPC.
            reason = f"No space left on device ({reason})"
        raise StorageError(
            f"cannot write the model's files in {tempfile.gettempdir()}: {reason}; free "
            f"some space there, or set TMPDIR to a folder on a disk with more"
        ) from None


@dataclass
class Built:
    """What an engine's training left beside the artifacts in the version's folder, for the manifest."""

    model: dict  # the manifest's model part (recipe.finish_model)
    report: CleaningReport  # the cleaning report of the whole input
    engine: dict  # {"name": "single"} or Spark's name, version and master
    period: dict | None  # first and last purchase trained on
    evaluation: dict | None = None  # the holdout's figures
    extra: tuple[str, ...] = ()  # artifacts beyond recipe.ARTIFACTS (the holdout's)


def announce_holdout(held: holdout.HeldOut, separate: bool, progress: Progress) -> None:
    """Say which baskets measure the model, and how (both engines, same words)."""
    since = f" (from {str(held.cutoff)[:16].replace('T', ' ')})" if held.cutoff is not None else ""
    how = "a second model is trained without them" if separate else "they are kept out of training (too few to matter)"
    progress(f"holdout: the {len(held.basket_ids):,} most recent baskets{since} measure the model: {how}")


def assess_holdout(
    folder: Path,
    model_info: dict,
    held: holdout.HeldOut | None,
    params: TrainingParams,
    progress: Progress,
    near: dict[str, list[int]] | None = None,
) -> tuple[dict | None, tuple[str, ...]]:
    """The holdout's evaluation and extra artifacts for a model written in folder (both engines)."""
    if held is None:
        return None, ()
    with stage(progress, "holdout: measured through Model.recommend, confidence calibrated"):
        evaluation, extra = holdout.assess(folder, model_info, held, params.seed, progress, near)
    progress(f"held out: {holdout.describe(evaluation)}")
    return evaluation, tuple(extra)


def single_engine(tx: Transactions, params: TrainingParams, progress: Progress) -> Callable[[Path], Built]:
    """The single-machine trainer as an engine: the model, measured on the most recent baskets (build_and_measure)."""

    def fill(folder: Path) -> Built:
        train_tx, held = holdout.split(tx, params.holdout) if params.holdout else (tx, None)
        fitted, fitted_all = fit_rerankers(tx, train_tx, held, params, progress)
        both = None
        if held is not None and paired.can_pair(tx):
            held_rows = holdout.split_mask(tx.basket_time, params.holdout)

            def both(out, measured, near, say, say_measured, assess):  # noqa: ANN001, ANN202 (a BuildBoth)
                return paired.build_pair(
                    tx, train_tx, held_rows, params, out, measured, near, say, say_measured, assess, fitted_all, fitted
                )

        done = build_and_measure(
            lambda out, say: build_model(tx, params, out, say, rerank=fitted_all),
            lambda out, near, say: build_model(train_tx, params, out, say, near, rerank=fitted),
            held,
            len(tx.basket_ids),
            params,
            folder,
            progress,
            both,
        )
        if done.evaluation is not None and fitted is not None:
            # the measured model's re-ranker: its periods end before the held-out baskets
            done.evaluation["rerank_periods"] = fitted.spec["periods"]
        period = purchase_period((tx if done.learned_all else train_tx).basket_time)
        return Built(done.model, tx.report, SINGLE_ENGINE, period, done.evaluation, with_rerank(folder, done.extra))

    return fill


def fit_rerankers(
    tx: Transactions,
    train_tx: Transactions,
    held: holdout.HeldOut | None,
    params: TrainingParams,
    progress: Progress,
    first_stage: Callable[[Transactions, Path, set[str]], object] | None = None,
) -> tuple[reranker.Fitted | None, reranker.Fitted | None]:
    """The measured model's re-ranker and the published model's (both engines; the same one when a single model
    is published and measured)."""
    # The measured model's re-ranker learns from periods before the held-out baskets; the published model's,
    # when it learns from every basket, from the most recent periods of the whole file (as its first stage).
    two = held is not None and params.holdout.separate(len(held.basket_ids), len(tx.basket_ids))
    say_published: Progress = lambda text: progress(f"published model: {text}")  # noqa: E731
    # (LightGBM on one thread only: libgomp's thread team does not survive a fork, so a child of a process that
    # had run a parallel fit would wait for it forever)
    single = params.rerank.threads == 1
    if not two or not params.rerank.enabled or first_stage is not None or not single or not forked.available():
        fitted = fit_reranker(train_tx, params, progress, first_stage)
        # (only when the measured one has a re-ranker: what is published is what was measured, trained on more)
        fitted_all = fit_reranker(tx, params, say_published, first_stage) if fitted is not None and two else fitted
    else:
        # The two at once, the published one in a child process on the other core: each is single-threaded for
        # most of its time (its features, LightGBM's one thread) and they share nothing. The published one is
        # fitted even when the measured one turns out to have no trees (then dropped, as above): that is rare, and
        # waiting for it would leave a core idle every time. (Spark's first stages run one after the other: one
        # driver's jobs.)
        published = forked.Forked(fit_reranker, (tx, params), say_published)
        try:
            fitted = fit_reranker(train_tx, params, progress)
        except BaseException:
            published.cancel()
            raise
        fitted_all = published.result()
    return (fitted, fitted_all) if fitted is not None else (None, None)


def fit_reranker(
    tx: Transactions,
    params: TrainingParams,
    progress: Progress,
    first_stage: Callable[[Transactions, Path, set[str]], object] | None = None,
) -> reranker.Fitted | None:
    """The re-ranker trained on validation periods carved from the end of tx (the baskets before any held-out
    ones), each with a first-stage model trained without them (by this machine, or by first_stage: the Spark
    engine's)."""
    if not params.rerank.enabled:
        return None

    def single_first_stage(train: Transactions, folder: Path, codes: set[str]) -> object:
        near: dict[str, list[int]] = {code: [] for code in codes}  # Annoy asked while the index is built
        info = build_model(
            train, params, folder, lambda _text: None, near, rerank=reranker.Fitted(None, {"trees": False})
        )
        model = open_model(lambda name: folder / name, "validation", {"model": info})
        model.prime({model.items.index[code]: found for code, found in near.items() if found})
        return model

    started = time.perf_counter()
    fitted = reranker.fit(tx, first_stage or single_first_stage, params.rerank, progress)
    if fitted is not None:
        progress(f"re-ranker: fitted on validation periods ({time.perf_counter() - started:.1f} s)")
    return fitted


def with_rerank(folder: Path, extra: tuple[str, ...]) -> tuple[str, ...]:
    """The extra artifacts of a version, its re-ranker's file included when written."""
    return (*extra, RERANK_FILE) if (folder / RERANK_FILE).exists() else extra


# Builds the published model into the first folder and the holdout model into the second (filling in the given
# codes' Annoy neighbours, with the second progress), measuring the holdout model with the given function as soon as
# it is written: both models' parts (the holdout model's DataFileError when it has nothing to learn), the seconds
# the holdout model took, and what the measurement returned.
BuildBoth = Callable[
    [Path, Path, dict[str, list[int]], Progress, Progress, Callable[[dict], tuple]],
    tuple[dict, "dict | DataFileError", float, "tuple | None"],
]


@dataclass(frozen=True)
class Measured:
    """A built model (the manifest's model part), its held-out figures and extra artifacts, and whether it learned
    from every basket (otherwise the held-out ones were kept out of it)."""

    model: dict
    evaluation: dict | None
    extra: tuple[str, ...]
    learned_all: bool


def build_and_measure(
    build_all: Callable[[Path, Progress], dict],
    build_without: Callable[[Path, dict[str, list[int]], Progress], dict],
    held: holdout.HeldOut | None,
    n_baskets: int,
    params: TrainingParams,
    folder: Path,
    progress: Progress,
    build_both: BuildBoth | None = None,
) -> Measured:
    """Build the model into folder and measure it on the held-out baskets, for both engines. build_all trains on
    every basket, build_without without the held-out ones (given the codes whose Annoy neighbours to fill in).

    A model cannot be measured on baskets it learned from. When the held-out baskets are a noticeable share of
    the file (HoldoutPolicy.separate), the published model learns from all of them and a second one, trained the
    same way without them, is measured: its figures, cases and confidence calibration go with the published
    version. Otherwise the measured model is the published one. Without a holdout (or when nothing before the
    held-out baskets was bought together) the model learns from everything, unmeasured. build_both, when given,
    builds the two models together (training/paired.py) instead of one after the other."""
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
    say_measured: Progress = lambda text: progress(f"  holdout model: {text}")  # noqa: E731
    with scratch_folder() as measured:
        assessed = None
        if build_both is not None:
            model_info, measured_info, built, assessed = build_both(
                folder,
                measured,
                near,
                progress,
                say_measured,
                lambda info: assess_holdout(measured, info, held, params, progress, near),
            )
        else:
            model_info = build_all(folder, progress)
            started = time.perf_counter()
            try:
                measured_info = build_without(measured, near, say_measured)
            except DataFileError as err:
                measured_info = err
            built = time.perf_counter() - started
        if isinstance(measured_info, DataFileError):
            _not_measured(measured_info, progress)
            return Measured(model_info, None, (), True)
        evaluation, extra = assessed or assess_holdout(measured, measured_info, held, params, progress, near)
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


def single_trainer(
    source: str | Path,
    params: TrainingParams,
    progress: Progress = say,
    encoding: str = "utf-8",
    max_memory_gb: float | None = None,
) -> Callable[[Path], Built]:
    """The single-machine engine for a file: reads and cleans it now (refusing it at once when the training would
    need more memory than allowed), and returns what builds and measures the model into a version's folder."""
    t = time.perf_counter()
    with tqdm(desc="reading", unit=" rows", unit_scale=True, leave=False, mininterval=0.5, disable=None) as bar:
        tx = load_transactions(source, on_rows=bar.update, encoding=encoding)
    for line in describe_report(tx.report):
        progress(f"  {line}")
    progress(f"read and cleaned in {time.perf_counter() - t:.1f} s")
    budget.check_memory(tx, params, max_memory_gb, progress)  # before the heavy stages, not after minutes of them
    return single_engine(tx, params, progress)
