"""The running experiment as a serving process follows it: each arm's model, loaded off the request path, and the arm
a request's shopper is in (core.experiments assigns it).

ExperimentHolder is the ModelHolder of the recommend function: at each refresh (every MODEL_POLL_SECONDS, by the
watcher thread of a long-running server or on the request path on Lambda) it also reads experiments/current.json and
loads what the arms serve: the active model (as served, nothing more to load), the staged model or a named version
(each under the active feed and rules), or the popular baseline (the active model's popularity order under the same
feed, rules and options: a no-model control). Only the arms' models stay loaded. An arm whose model cannot be loaded
serves the active model and /health says so; the answers then carry the arm still, and its model version.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

from recommender.core import registry
from recommender.core.errors import InvalidInput, NotFound, RecommenderError, VersionUnavailable
from recommender.core.experiments import CURRENT, Arm, Experiment, assign
from recommender.core.storage import Storage
from recommender.serving import merchandising
from recommender.serving.model import Model, ModelHolder, Scored, _answers_of, load_model

log = logging.getLogger("recommender")


class PopularBaseline(Model):
    """A model answering with its popularity order only (never what it learned), under the same feed, rules and
    options: an experiment's no-model control. A view sharing every array of the model it is made from."""

    learned = False

    @classmethod
    def of(cls, model: Model) -> PopularBaseline:
        """The baseline of a model as served (its feed and rules kept)."""
        view = copy.copy(model)
        view.__class__ = cls
        cache = getattr(model._answers, "cache_info", None)
        view._answers = _answers_of(view, cache().maxsize if cache else 0)  # its own: answers differ
        return view

    def _answer(self, basket: tuple[int, ...], n: int) -> tuple[tuple[Scored, ...], bool]:
        return self._popular(n, set(basket)), True


@dataclass(frozen=True)
class ArmState:
    """What one arm serves in this process, and why not what it asks for when it cannot."""

    arm: Arm
    serves: str
    problem: str | None = None

    def to_json(self) -> dict:
        """One arm of /health's experiment block."""
        return {
            "name": self.arm.name,
            "kind": self.arm.kind,
            "version": self.arm.version,
            "share": self.arm.share,
            "serves": self.serves,
            "problem": self.problem,
        }


class Routing:
    """One experiment as this process serves it, swapped as a whole: each arm's model (None: the active one)."""

    __slots__ = ("experiment", "models", "states", "problem")

    def __init__(
        self,
        experiment: Experiment,
        models: dict[str, Model | None],
        states: tuple[ArmState, ...],
        problem: str | None = None,
    ) -> None:
        self.experiment = experiment
        self.models = models
        self.states = states
        self.problem = problem  # what keeps the experiment from being served as defined, if anything

    def choose(self, unit: str, active: Model) -> tuple[Model, str]:
        """The model answering the shopper `unit` (user or session id), and their arm."""
        arm = assign(self.experiment, unit)
        return self.models[arm] or active, arm

    def health(self) -> dict:
        """/health's experiment block."""
        return {
            "name": self.experiment.name,
            "started_at": self.experiment.started_at,
            "arms": [s.to_json() for s in self.states],
            "degraded": self.problem,
        }


class _Loaded:
    """One arm version in memory: the plain model, and its view under the active feed and rules."""

    def __init__(self, plain: Model, storage: Storage) -> None:
        self.plain = plain
        self.merchandiser = merchandising.Merchandiser(storage)
        self.view: Model | None = None

    def follow(self) -> Model:
        """The view to serve now (rebuilt when the feed or rules moved)."""
        self.view = self.merchandiser.view(self.plain, self.view)
        return self.view


class ExperimentHolder(ModelHolder):
    """A ModelHolder that also follows the running experiment (see the module's docstring)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - ModelHolder's
        super().__init__(*args, **kwargs)
        self.routing: Routing | None = None
        self.experiment_error: str | None = None  # reading the experiment failed: the last routing stays
        self._loaded: dict[str, _Loaded] = {}
        self._failed: dict[str, str] = {}  # versions that cannot be loaded, for the experiment of _failed_for
        self._failed_for: str | None = None
        self._baseline: tuple[Model, PopularBaseline] | None = None

    def follow(self) -> None:
        """Read the running experiment and put its arms' models in place (called by refresh, under its lock)."""
        try:
            experiment = _read(self.storage)
        except InvalidInput as err:  # a damaged record: nobody takes part rather than a wrong split
            self._set(None, f"{err.message}; every request is answered by the active model, without an arm")
            return
        except RecommenderError as err:
            self._storage_failed(err)
            return
        if experiment is None or self.model is None:
            self.experiment_error = None
            self._set(None)
            return
        started = f"{experiment.name}@{experiment.started_at}"
        if started != self._failed_for:
            self._failed, self._failed_for = {}, started  # a new experiment tries every version afresh
        models: dict[str, Model | None] = {}
        states = []
        needed: set[str] = set()
        try:
            for arm in experiment.arms:
                model, state = self._arm(arm, needed)
                models[arm.name] = model
                states.append(state)
        except RecommenderError as err:
            self._storage_failed(err)
            return
        self.experiment_error = None
        for version in set(self._loaded) - needed:
            del self._loaded[version]  # the arms' models only
        problems = [f"arm {s.arm.name}: {s.problem}" for s in states if s.problem]
        routing = Routing(experiment, models, tuple(states), "; ".join(problems) or None)
        self._set(routing)

    def _storage_failed(self, err: RecommenderError) -> None:
        """The storage failed while following the experiment: the arms served so far stay (as the model does)."""
        if err.message != self.experiment_error:
            log.warning("following the running experiment failed: %s", err.message)
        self.experiment_error = err.message

    def _arm(self, arm: Arm, needed: set[str]) -> tuple[Model | None, ArmState]:
        """The model an arm serves now (None: the active one) and what to say of it. A version that is damaged or
        gone degrades the arm; the storage failing raises (the caller keeps the arms as they were)."""
        active = self.model
        assert active is not None
        if arm.kind == "active":
            return None, ArmState(arm, f"the active model {active.version}")
        if arm.kind == "popular":
            if self._baseline is None or self._baseline[0] is not active:
                self._baseline = (active, PopularBaseline.of(active))
            return self._baseline[1], ArmState(arm, f"the popularity order of the active model {active.version}")
        version = arm.version
        if arm.kind == "staged":
            try:
                pointer = registry.staged(self.storage)
            except VersionUnavailable as err:  # a damaged pointer
                return None, self._degraded(arm, err.message)
            if pointer is None:
                return None, self._degraded(arm, "nothing is staged any more")
            version = pointer.version
        assert version is not None
        if version == active.version:
            return None, ArmState(arm, f"model {version} (the active one)")
        problem = self._failed.get(version)
        if problem is None:
            try:
                loaded = self._load(version)
            except VersionUnavailable as err:
                problem = self._failed[version] = err.message  # damaged or gone: not tried again in this experiment
            else:
                needed.add(version)
                # Under the active feed and rules; their pointers failing is the storage's failure, not the arm's.
                return loaded.follow(), ArmState(arm, f"model {version}")
        return None, self._degraded(arm, problem)

    def _degraded(self, arm: Arm, problem: str) -> ArmState:
        active = self.model
        assert active is not None
        return ArmState(arm, f"the active model {active.version}", f"{problem}: serving the active model instead")

    def _load(self, version: str) -> _Loaded:
        loaded = self._loaded.get(version)
        if loaded is None:
            plain = load_model(self.storage, version, self.answer_cache)
            if self.warm:
                plain.warm()
            loaded = self._loaded[version] = _Loaded(plain, self.storage)
            log.info("experiment arm model %s loaded (%d items)", version, len(plain.items))
        return loaded

    def _set(self, routing: Routing | None, problem: str | None = None) -> None:
        before = self.routing
        if routing is None:
            self._loaded.clear()
            self._baseline = None
            if problem is not None:
                if problem != self.experiment_error:
                    log.warning("%s", problem)
                self.experiment_error = problem
            if before is not None:
                log.info("experiment %s is no longer served: no request gets an arm", before.experiment.name)
        else:
            if before is None or before.experiment != routing.experiment:
                log.info(
                    "experiment %s: %s",
                    routing.experiment.name,
                    ", ".join(f"{s.arm.name} ({s.arm.share}%) {s.serves}" for s in routing.states),
                )
            if routing.problem and (before is None or before.problem != routing.problem):
                log.warning("experiment %s: %s", routing.experiment.name, routing.problem)
        self.routing = routing

    def health(self, clean: Callable[[str], str] = str) -> dict | None:
        """/health's experiment block, or None when no experiment is served; clean(text) for each reason given
        (the web layer takes storage addresses out)."""
        routing = self.routing
        if routing is not None:
            block = routing.health()
            degraded = "; ".join(filter(None, (block["degraded"], self.experiment_error)))
            block["degraded"] = clean(degraded) if degraded else None
            for arm in block["arms"]:
                arm["problem"] = arm["problem"] and clean(arm["problem"])
            return block
        if self.experiment_error:
            return {"name": None, "started_at": None, "arms": [], "degraded": clean(self.experiment_error)}
        return None


def _read(storage: Storage) -> Experiment | None:
    try:
        data = storage.read(CURRENT)
    except NotFound:
        return None
    return Experiment.from_json(data)


def arm_of(routing: Routing | None, model: Model, unit: str | None) -> tuple[Model, str | None]:
    """The model answering a request and its experiment arm: with no experiment, or no unit (user or session id)
    in the request, the active model and no arm."""
    if routing is None or not unit:
        return model, None
    return routing.choose(unit, model)
