"""Experiments: assignment (shares, stability across processes), the arms' spelling, and starting and stopping on both
storage backends (every refusal one line; two starts at once: one wins)."""

import json
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recommender.core import experiments, registry
from recommender.core.errors import Conflict, InvalidInput, ModelUnavailable
from recommender.core.experiments import Arm, Experiment, assign, bucket, parse_arms
from recommender.core.storage import Storage

ARMS = "control=popular:10,a=active:45,b=active:45"


def three_arms(name: str = "new-model") -> Experiment:
    return Experiment(name, "2026-12-02T10:00:00Z", parse_arms(ARMS))


def seed(storage: Storage, folder: Path) -> str:
    """Copy a trained storage folder (its active model) into storage; the active version."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        storage.write(path.relative_to(folder).as_posix(), path.read_bytes())
    return registry.active_version(storage)


def copy_version(storage: Storage, version: str, new: str) -> str:
    """Another complete model version with the same artifacts (a servable second version)."""
    for key in storage.list(registry.artifact_key(version, "")):
        storage.write(key.replace(version, new), storage.read(key))
    return new


def test_shares_are_kept_within_one_percent_over_100000_ids():
    experiment = three_arms()
    counts = Counter(assign(experiment, f"session-{i}") for i in range(100_000))
    for arm in experiment.arms:
        assert abs(counts[arm.name] / 100_000 - arm.share / 100) < 0.01, counts


def test_buckets_are_the_contract_and_arms_take_consecutive_ranges():
    # The contract the report and the simulator compute too: sha256 of "name:unit", first 8 bytes, big-endian.
    import hashlib

    unit = "0f3c9a1e2b7d4c6a8e5f1a2b3c4d5e6f"
    expected = int.from_bytes(hashlib.sha256(f"new-model:{unit}".encode()).digest()[:8], "big") % 10000
    assert bucket("new-model", unit) == expected
    experiment = three_arms()
    assert experiment.bounds == (1000, 5500, 10000)
    by_bucket = {}
    for i in range(20_000):
        by_bucket.setdefault(bucket(experiment.name, str(i)), assign(experiment, str(i)))
    assert all(by_bucket[b] == ("control" if b < 1000 else "a" if b < 5500 else "b") for b in by_bucket)


def test_assignment_is_stable_across_calls_processes_and_names():
    experiment = three_arms()
    units = [f"user-{i}" for i in range(2000)]
    here = [assign(experiment, u) for u in units]
    assert here == [assign(three_arms(), u) for u in units]  # no state: a new object, the same arms
    script = (
        "import json, sys\n"
        "from recommender.core.experiments import Experiment, assign, parse_arms\n"
        f"e = Experiment('new-model', 'x', parse_arms({ARMS!r}))\n"
        "print(json.dumps([assign(e, f'user-{i}') for i in range(2000)]))\n"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(other.stdout) == here
    # Another experiment's name shuffles the shoppers afresh.
    moved = sum(a != b for a, b in zip(here, (assign(three_arms("other"), u) for u in units)))
    assert moved > 500


@pytest.mark.parametrize(
    "arms,message",
    [
        ("a=fancy:50,b=active:50", "arm 'a': unknown kind 'fancy' (kinds: popular, active, staged, version:<id>)"),
        ("a=active:50,b=popular:40", "the arms' shares sum to 90, not 100"),
        ("a=active:50,b=popular:60", "the arms' shares sum to 110, not 100"),
        ("a b=active:50,b=popular:50", "arm name 'a b' is not 1-32 letters"),
        ("-=active:50,b=popular:50", "arm name '-' is not 1-32 letters"),
        ("a=active:50,a=popular:50", "arm name 'a' is given twice"),
        ("a=active:100", "an experiment needs at least two arms"),
        ("a=active:half,b=popular:50", "arm 'a': share 'half' is not a whole percentage"),
        ("a=version:50,b=popular:50", "arm 'a': a version arm is a=version:<id>:<share>"),
        ("a=active:0,b=popular:100", "arm 'a': share 0 is not between 1 and 100"),
        ("a=active,b=popular:50", "arm 'a=active' is not name=kind:share"),
        ("", "no arms given"),
    ],
)
def test_bad_definitions_are_refused_in_one_line(trained_storage, arms, message):
    with pytest.raises(InvalidInput) as err:
        experiments.start(trained_storage, "new-model", parse_arms(arms))
    assert err.value.message.startswith(message) and "\n" not in err.value.message
    assert experiments.read_current(trained_storage) is None


def test_a_bad_experiment_name_is_refused(trained_storage):
    with pytest.raises(InvalidInput, match="experiment name '../x' is not"):
        experiments.start(trained_storage, "../x", parse_arms("a=active:50,b=popular:50"))


def test_start_and_stop_with_every_refusal(storage, trained_folder):
    active = seed(storage, trained_folder)
    other = copy_version(storage, active, "20990101T000000000Z-0000000000aa")
    damaged = copy_version(storage, active, "20990101T000000000Z-0000000000bb")
    storage.write(registry.artifact_key(damaged, "index.ann"), b"not an index")

    def refused(arms: str, error: type = InvalidInput, name: str = "new-model") -> str:
        with pytest.raises(error) as err:
            experiments.start(storage, name, parse_arms(arms))
        assert "\n" not in err.value.message
        return err.value.message

    assert refused("a=active:50,b=version:nope:50") == (
        "arm 'b': there is no model version 'nope' (make versions lists them)"
    )
    assert refused(f"a=active:50,b=version:{damaged}:50") == (
        f"arm 'b': model version {damaged} is damaged: index.ann fails its checksum"
    )
    assert refused("a=active:50,s=staged:50").startswith("arm 's': nothing is staged")
    assert storage.list(experiments.CURRENT) == []

    clock = lambda: datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # noqa: E731
    started = experiments.start(
        storage, "new-model", parse_arms(f"control=popular:10,a=active:45,b=version:{other}:45"), now=clock
    )
    assert started.started_at == "2026-12-02T10:00:00Z"
    stored = json.loads(storage.read(experiments.CURRENT))
    assert stored == {
        "name": "new-model",
        "started_at": "2026-12-02T10:00:00Z",
        "arms": [
            {"name": "control", "kind": "popular", "version": None, "share": 10},
            {"name": "a", "kind": "active", "version": None, "share": 45},
            {"name": "b", "kind": "version", "version": other, "share": 45},
        ],
        "attribution_window_hours": 24,
    }
    assert experiments.read_current(storage) == started
    assert experiments.versions_in_use(storage) == {other}
    assert refused("a=active:50,b=popular:50", Conflict, "another") == (
        "experiment 'new-model' is running (since 2026-12-02T10:00:00Z): one experiment at a time; stop it first "
        "with make experiment_stop NAME=new-model"
    )

    with pytest.raises(InvalidInput, match="the running experiment is 'new-model', not 'old'"):
        experiments.stop(storage, "old")
    stopped = experiments.stop(storage, "new-model", now=lambda: datetime(2026, 12, 3, 10, 0, tzinfo=UTC))
    assert stopped.stopped_at == "2026-12-03T10:00:00Z" and storage.list(experiments.CURRENT) == []
    assert experiments.history(storage) == [stopped]
    record = storage.read("experiments/history/new-model.json")
    assert (
        json.loads(record) == {**stored, "stopped_at": "2026-12-03T10:00:00Z"}
        and b'"attribution_window_hours": 24,' in record
    )
    with pytest.raises(InvalidInput, match="no experiment is running"):
        experiments.stop(storage, "new-model")
    assert refused("a=active:50,b=popular:50", Conflict).startswith("an experiment named 'new-model' ran before")

    registry.stage(storage, other)
    assert experiments.start(storage, "staged-one", parse_arms("a=active:50,s=staged:50")).arms[1].version is None


def test_no_active_model_is_refused(storage):
    with pytest.raises(ModelUnavailable, match="no trained model"):
        experiments.start(storage, "new-model", parse_arms("a=active:50,b=popular:50"))


def test_two_starts_at_once_one_wins(storage, trained_folder):
    seed(storage, trained_folder)
    outcomes: list[object] = []
    barrier = threading.Barrier(2)

    def start(name: str) -> None:
        barrier.wait()
        try:
            outcomes.append(experiments.start(storage, name, parse_arms("a=active:50,b=popular:50")))
        except Conflict as err:
            outcomes.append(err.message)

    threads = [threading.Thread(target=start, args=(name,)) for name in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [o for o in outcomes if isinstance(o, Experiment)]
    lost = [o for o in outcomes if isinstance(o, str)]
    assert len(won) == 1 and len(lost) == 1 and "one experiment at a time" in lost[0]
    assert experiments.read_current(storage) == won[0]


def test_a_damaged_record_is_reported_and_can_be_stopped(trained_storage):
    trained_storage.write(experiments.CURRENT, b'{"name": "broken", "arms": "nope"}')
    with pytest.raises(InvalidInput, match="experiments/current.json is damaged"):
        experiments.read_current(trained_storage)
    with pytest.raises(Conflict, match="one experiment at a time"):
        experiments.start(trained_storage, "next", parse_arms("a=active:50,b=popular:50"))
    assert experiments.stop(trained_storage, "broken") is None
    assert trained_storage.read("experiments/history/broken.json") == b'{"name": "broken", "arms": "nope"}'
    experiments.start(trained_storage, "next", parse_arms("a=active:50,b=popular:50"))


def test_pruning_keeps_the_versions_an_experiment_serves(trained_storage):
    active = registry.active_version(trained_storage)
    old = copy_version(trained_storage, active, "20000101T000000000Z-0000000000aa")
    experiments.start(trained_storage, "keep-me", parse_arms(f"a=active:50,b=version:{old}:50"))
    assert registry.prune(trained_storage, 1, in_use=experiments.versions_in_use(trained_storage)) == []
    assert registry.prune(trained_storage, 1) == [old]


def test_arm_describe_and_round_trip():
    experiment = Experiment("x", "2026-12-02T10:00:00Z", (Arm("a", "version", "v1", 50), Arm("b", "popular", None, 50)))
    assert [a.describe() for a in experiment.arms] == ["version v1", "popular"]
    assert Experiment.from_json(json.dumps(experiment.to_json())) == experiment
