"""Live experiments between models: their definition, where they are stored, and which arm a shopper is in.

Stored at `experiments/current.json` (absent: no experiment runs):
    {"name", "started_at" (ISO 8601 UTC), "arms": [{"name", "kind", "version", "share"}], "attribution_window_hours"}
with kind one of popular (the model's popularity order: a no-model control), active, staged or version (a named model
version), and shares in percent summing to 100. A stopped experiment moves to `experiments/history/<name>.json` with
"stopped_at" added. One experiment at a time; its name is never reused (it seeds the assignment).

Assignment needs no state: the unit (the user id when the request gives one, else the session id) and the
experiment's name are hashed into one of 10,000 buckets, and the arms take consecutive ranges of them in the order
given, share * 100 buckets each. Serving, analytics and the shop simulator all compute it the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from recommender.core import registry
from recommender.core.errors import Conflict, InvalidInput, NotFound
from recommender.core.storage import Storage

CURRENT = "experiments/current.json"
HISTORY = "experiments/history/"
BUCKETS = 10_000
KINDS = ("popular", "active", "staged", "version")
DEFAULT_WINDOW_HOURS = 24
# Arm names go into recommendation ids (serving.attribution): "-" alone means "no arm" there.
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
ARMS_SYNTAX = "name=kind:share, comma-separated; kind is popular, active, staged or version:<id>"


@dataclass(frozen=True)
class Arm:
    """One arm: what it serves and its share of the traffic (percent)."""

    name: str
    kind: str
    version: str | None
    share: int

    def describe(self) -> str:
        """What the arm serves, as the commands print it ("version 2026...", "popular", ...)."""
        return f"version {self.version}" if self.kind == "version" else self.kind


@dataclass(frozen=True)
class Experiment:
    """A running or stopped experiment."""

    name: str
    started_at: str
    arms: tuple[Arm, ...]
    attribution_window_hours: float = DEFAULT_WINDOW_HOURS
    stopped_at: str | None = None
    # The first bucket past each arm's range, in arm order (what assign bisects).
    bounds: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ends, total = [], 0
        for arm in self.arms:
            total += arm.share * (BUCKETS // 100)
            ends.append(total)
        object.__setattr__(self, "bounds", tuple(ends))

    def arm(self, name: str) -> Arm:
        """The arm of that name; NotFound when there is none."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise NotFound(f"experiment {self.name!r} has no arm {name!r}")

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        out: dict[str, Any] = {
            "name": self.name,
            "started_at": self.started_at,
            "arms": [{"name": a.name, "kind": a.kind, "version": a.version, "share": a.share} for a in self.arms],
            "attribution_window_hours": self.attribution_window_hours,
        }
        if self.stopped_at is not None:
            out["stopped_at"] = self.stopped_at
        return out

    @classmethod
    def from_json(cls, data: bytes | str | dict, key: str = CURRENT) -> Experiment:
        """An experiment from its stored form; InvalidInput naming the key when it is not one."""
        try:
            raw = json.loads(data) if isinstance(data, (bytes, str)) else data
            experiment = cls(
                str(raw["name"]),
                str(raw["started_at"]),
                tuple(
                    Arm(
                        str(a["name"]),
                        str(a["kind"]),
                        None if a.get("version") is None else str(a["version"]),
                        int(a["share"]),
                    )
                    for a in raw["arms"]
                ),
                _hours(raw.get("attribution_window_hours", DEFAULT_WINDOW_HOURS)),
                None if raw.get("stopped_at") is None else str(raw["stopped_at"]),
            )
            check(experiment)
        except (ValueError, KeyError, TypeError, AttributeError, InvalidInput) as err:
            why = err.message if isinstance(err, InvalidInput) else "not an experiment"
            raise InvalidInput(f"{key} is damaged ({why})") from None
        return experiment


def _hours(value: object) -> float:
    """A window in hours as stored: a whole number stays one (24, not 24.0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("attribution_window_hours is not a number")
    return int(value) if float(value).is_integer() else float(value)


def bucket(name: str, unit: str) -> int:
    """The unit's bucket (0..9999) in the experiment of that name."""
    return int.from_bytes(hashlib.sha256(f"{name}:{unit}".encode()).digest()[:8], "big") % BUCKETS


def assign(experiment: Experiment, unit: str) -> str:
    """The name of the arm the unit (a user or session id) is in: the same in every process, at every request."""
    arms = experiment.arms
    return arms[min(bisect_right(experiment.bounds, bucket(experiment.name, unit)), len(arms) - 1)].name


def now_iso(now: datetime | None = None) -> str:
    """A time as the experiments store it: ISO 8601 UTC to the second, with Z."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_arms(text: str) -> tuple[Arm, ...]:
    """Arms from the command line's spelling, e.g. "control=popular:10,a=active:45,b=version:<id>:45"."""
    arms = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, rest = part.partition("=")
        name = name.strip()
        fields_ = [f.strip() for f in rest.split(":")]
        if not sep or len(fields_) < 2:
            raise InvalidInput(f"arm {part!r} is not name=kind:share ({ARMS_SYNTAX})")
        kind, share_text = fields_[0], fields_[-1]
        if kind not in KINDS:
            raise InvalidInput(f"arm {name!r}: unknown kind {kind!r} (kinds: popular, active, staged, version:<id>)")
        if kind == "version" and len(fields_) != 3:
            raise InvalidInput(f"arm {name!r}: a version arm is {name}=version:<id>:<share>")
        if kind != "version" and len(fields_) != 2:
            raise InvalidInput(f"arm {name!r}: a {kind} arm is {name}={kind}:<share>")
        try:
            share = int(share_text)
        except ValueError:
            raise InvalidInput(f"arm {name!r}: share {share_text!r} is not a whole percentage") from None
        arms.append(Arm(name, kind, fields_[1] if kind == "version" else None, share))
    if not arms:
        raise InvalidInput(f"no arms given ({ARMS_SYNTAX})")
    return tuple(arms)


def check(experiment: Experiment) -> None:
    """InvalidInput (one line) when the definition itself is wrong: names, kinds, shares."""
    if not EXPERIMENT_NAME.fullmatch(experiment.name):
        raise InvalidInput(
            f"experiment name {experiment.name!r} is not 1-64 letters, digits, '-' or '_' starting with a letter or "
            "digit"
        )
    if len(experiment.arms) < 2:
        raise InvalidInput("an experiment needs at least two arms")
    seen = set()
    for arm in experiment.arms:
        if not ARM_NAME.fullmatch(arm.name):
            raise InvalidInput(
                f"arm name {arm.name!r} is not 1-32 letters, digits, '-' or '_' starting with a letter or digit"
            )
        if arm.name in seen:
            raise InvalidInput(f"arm name {arm.name!r} is given twice")
        seen.add(arm.name)
        if arm.kind not in KINDS:
            raise InvalidInput(f"arm {arm.name!r}: unknown kind {arm.kind!r} (kinds: {', '.join(KINDS)})")
        if (arm.kind == "version") != bool(arm.version):
            raise InvalidInput(f"arm {arm.name!r}: only a version arm names a version")
        if not 1 <= arm.share <= 100:
            raise InvalidInput(f"arm {arm.name!r}: share {arm.share} is not between 1 and 100")
    total = sum(a.share for a in experiment.arms)
    if total != 100:
        raise InvalidInput(f"the arms' shares sum to {total}, not 100")
    if not 0 < experiment.attribution_window_hours <= 24 * 90:
        raise InvalidInput(
            f"attribution window of {experiment.attribution_window_hours:g} h is not between 0 and 90 days"
        )


def _check_models(storage: Storage, experiment: Experiment) -> Experiment:
    """The experiment with its version arms' versions resolved; refusals for models that cannot be served."""
    registry.active_version(storage)  # every arm falls back on the active model: there must be one
    arms = []
    for arm in experiment.arms:
        if arm.kind == "staged":
            pointer = registry.staged(storage)
            if pointer is None:
                raise InvalidInput(
                    f"arm {arm.name!r}: nothing is staged (make train_parallel PATH_TO_DATA=... stages a model)"
                )
            _check_version(storage, arm, pointer.version)
        elif arm.kind == "version":
            arm = replace(arm, version=_check_version(storage, arm, arm.version or ""))
        arms.append(arm)
    return replace(experiment, arms=tuple(arms))


def _check_version(storage: Storage, arm: Arm, version: str) -> str:
    if version not in registry.list_versions(storage):
        raise InvalidInput(f"arm {arm.name!r}: there is no model version {version!r} (make versions lists them)")
    problem = registry.version_problem(storage, version)
    if problem is not None:
        raise InvalidInput(f"arm {arm.name!r}: model version {version} is {problem}")
    return version


def read_current(storage: Storage) -> Experiment | None:
    """The running experiment, or None; InvalidInput when the stored one is damaged."""
    try:
        return Experiment.from_json(storage.read(CURRENT))
    except NotFound:
        return None


def versions_in_use(storage: Storage) -> set[str]:
    """The model versions the running experiment's version arms name (pruning keeps them); none when it is damaged."""
    try:
        running = read_current(storage)
    except InvalidInput:
        return set()
    return {a.version for a in running.arms if a.version} if running is not None else set()


def history(storage: Storage) -> list[Experiment]:
    """The stopped experiments, oldest first (a damaged record is skipped)."""
    found = []
    for key in storage.list(HISTORY):
        try:
            found.append(Experiment.from_json(storage.read(key), key))
        except (NotFound, InvalidInput):
            continue
    return sorted(found, key=lambda e: (e.stopped_at or "", e.name))


def _history_key(name: str) -> str:
    return f"{HISTORY}{name}.json"


def start(
    storage: Storage,
    name: str,
    arms: tuple[Arm, ...],
    window_hours: float = DEFAULT_WINDOW_HOURS,
    now: Callable[[], datetime] = registry.utcnow,
) -> Experiment:
    """Start an experiment after checking it in full: its definition, and that every model it names can be served.
    Conflict when one already runs (one at a time) or the name was used before; two starts at once: one wins."""
    experiment = Experiment(name, now_iso(now()), arms, window_hours)
    check(experiment)
    running = _current_or_damaged(storage)
    if running is not None:
        raise Conflict(_one_at_a_time(running))
    if storage.list(_history_key(name)):
        raise Conflict(
            f"an experiment named {name!r} ran before: choose a new name (the name seeds the assignment of shoppers "
            "to arms)"
        )
    experiment = _check_models(storage, experiment)
    if not storage.create(CURRENT, json.dumps(experiment.to_json(), indent=1).encode()):
        raise Conflict(_one_at_a_time(_current_or_damaged(storage)))
    return experiment


def _current_or_damaged(storage: Storage) -> Experiment | str | None:
    try:
        return read_current(storage)
    except InvalidInput as err:
        return err.message


def _one_at_a_time(running: Experiment | str | None) -> str:
    if isinstance(running, Experiment):
        return (
            f"experiment {running.name!r} is running (since {running.started_at}): one experiment at a time; "
            f"stop it first with make experiment_stop NAME={running.name}"
        )
    return f"another experiment was started meanwhile ({running or 'it has stopped since'}): one experiment at a time"


def stop(storage: Storage, name: str, now: Callable[[], datetime] = registry.utcnow) -> Experiment | None:
    """Stop the running experiment of that name: its record moves to the history with stopped_at, then serving
    returns to the active model. Safe to run again after an interruption. None when the record was damaged (it is
    moved as it was)."""
    if not EXPERIMENT_NAME.fullmatch(name):
        raise InvalidInput(f"experiment name {name!r} is not 1-64 letters, digits, '-' or '_'")
    try:
        data, tag = storage.read_tagged(CURRENT)
    except NotFound:
        raise InvalidInput(f"no experiment is running (nothing to stop for {name!r})") from None
    try:
        running: Experiment | None = Experiment.from_json(data)
    except InvalidInput:
        running = None  # damaged: stopping it is still possible, by the name it holds if it can be read
    found = running.name if running is not None else _raw_name(data)
    if found is not None and found != name:
        raise InvalidInput(f"the running experiment is {found!r}, not {name!r}")
    stopped = replace(running, stopped_at=now_iso(now())) if running is not None else None
    # The history first: an interruption before the delete leaves the experiment running, and the next stop
    # finishes the job (create keeps the first record).
    storage.create(
        _history_key(name), json.dumps(stopped.to_json(), indent=1).encode() if stopped is not None else data
    )
    if not storage.delete_if(CURRENT, tag):
        raise Conflict(f"{CURRENT} changed while stopping {name!r}: look with make experiments")
    return stopped


def _raw_name(data: bytes) -> str | None:
    try:
        name = json.loads(data)["name"]
    except (ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) and EXPERIMENT_NAME.fullmatch(name) else None
