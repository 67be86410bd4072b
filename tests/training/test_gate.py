"""The activation gate: a clearly worse model is refused with both figures, FORCE overrides, honest comparisons only."""

import json
import os

import pandas as pd
import pytest

from recommender.core import registry
from recommender.core.errors import ModelRefused
from recommender.core.storage import LocalStorage
from recommender.tools import synthetic
from recommender.training import gate
from recommender.training.gate import Comparison
from recommender.training.pipeline import train
from tests.conftest import make_runner


def quiet(_message):
    pass


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A year of synthetic purchases (known complements) and the same split: all but the last 20 days, and the
    last 20 days alone (a wrong export)."""
    folder = tmp_path_factory.mktemp("gate")
    year = folder / "year.csv"
    synthetic.write_csv(synthetic.preset("tiny", invoices=3000, products=200, customers=300), year)
    frame = pd.read_csv(year, dtype=str, keep_default_na=False)
    when = pd.to_datetime(frame.InvoiceDate, format="mixed")
    cut = when.max() - pd.Timedelta(days=20)
    frame[when < cut].to_csv(folder / "before.csv", index=False)
    frame[when >= cut].to_csv(folder / "last20days.csv", index=False)
    return {"year": year, "before": folder / "before.csv", "last": folder / "last20days.csv"}


def test_a_wrong_export_is_refused_with_both_figures_and_staged(tmp_path, files):
    storage = LocalStorage(tmp_path)
    good = train(files["before"], storage, progress=quiet)
    with pytest.raises(ModelRefused) as refused:
        train(files["last"], storage, progress=quiet)
    message = refused.value.message
    assert registry.active_version(storage) == good.version  # the served model stays
    staged = registry.staged(storage).version
    assert "HR@10 0.4" in message and "against 0.6" in message and good.version in message and staged in message
    assert "FORCE=1" in message and "\n" not in message
    # Forced, it goes through, saying what it overrode.
    lines = []
    assert gate.check(storage, staged, force=True, progress=lines.append).worse(gate.MARGIN)
    assert "activated anyway" in lines[0]


def test_a_wrong_export_of_days_the_active_model_learned_from_is_refused_too(tmp_path, files):
    # The active model learned from the whole year: no held-out basket of the new one is newer, so each model's
    # own held-out figures decide, and the twenty days alone lose.
    storage = LocalStorage(tmp_path)
    year = train(files["year"], storage, progress=quiet)
    with pytest.raises(ModelRefused) as refused:
        train(files["last"], storage, progress=quiet)
    assert registry.active_version(storage) == year.version
    assert "each on its own held-out baskets" in refused.value.message


def test_a_model_as_good_is_activated_and_the_figures_are_shown(tmp_path, files):
    storage = LocalStorage(tmp_path)
    train(files["before"], storage, progress=quiet)
    lines = []
    again = train(files["before"], storage, progress=lines.append)
    assert registry.active_version(storage) == again.version
    compared = next(line for line in lines if line.startswith("compared with the active model"))
    hr = again.manifest["evaluation"]["model"]["hr"]
    assert f"HR@10 {hr:.3f} for the new model" in compared and f"against {hr:.3f}" in compared


def test_only_baskets_newer_than_the_active_model_s_data_count(tmp_path, files):
    storage = LocalStorage(tmp_path)
    year = train(files["year"], storage, progress=quiet)
    # An older export: all its held-out baskets are ones the active model learned from, so the figures each model
    # got on its own held-out baskets are compared instead (as good here: accepted).
    lines = []
    older = train(files["before"], storage, progress=lines.append)
    assert registry.active_version(storage) == older.version
    compared = next(line for line in lines if line.startswith("compared with the active model"))
    assert "each on its own held-out baskets" in compared
    assert f"HR@10 {older.manifest['evaluation']['model']['hr']:.3f} for the new" in compared
    assert f"against {year.manifest['evaluation']['model']['hr']:.3f} for the active" in compared
    # An active model that learned from part of the new model's held-out days: only the later baskets are scored.
    manifest = registry.read_manifest(storage, older.version)
    manifest["period"]["last"] = "2011-12-01T00:00:00"
    storage.write(registry.artifact_key(older.version, "manifest.json"), json.dumps(manifest).encode())
    comparison, _ = gate.compare(storage, year.version, older.version)
    assert year.manifest["evaluation"]["cutoff"] < "2011-12-01"
    assert gate.MIN_CASES <= comparison.cases < year.manifest["evaluation"]["cases"]
    assert comparison.first >= "2011-12-01"


def test_an_active_model_from_before_holdouts_is_not_compared(tmp_path, files):
    storage = LocalStorage(tmp_path)
    old = train(files["before"], storage, progress=quiet)
    manifest = registry.read_manifest(storage, old.version)
    del manifest["period"], manifest["evaluation"]
    storage.write(registry.artifact_key(old.version, "manifest.json"), json.dumps(manifest).encode())
    lines = []
    new = train(files["last"], storage, progress=lines.append)
    assert registry.active_version(storage) == new.version
    assert any("trained before held-out evaluation existed" in line for line in lines)


def test_margin_and_minimum_cases():
    def comparison(hr_new, hr_active, cases=100):
        return Comparison("new", "old", cases, None, None, {"hr": hr_new, "mrr": 0.1}, {"hr": hr_active, "mrr": 0.1})

    assert comparison(0.26, 0.30).worse(0.10)  # 13% below
    assert not comparison(0.28, 0.30).worse(0.10)  # 7% below: noise, not a wrong file
    assert not comparison(0.10, 0.30, cases=gate.MIN_CASES - 1).worse(0.10)
    assert not comparison(0.0, 0.0).worse(0.10)
    own = Comparison("new", "old", 100, None, None, {"hr": 0.2, "mrr": 0.1}, {"hr": 0.3, "mrr": 0.1}, own_cases=20)
    assert not own.worse(0.10) and "(100 and 20;" in own.describe()


def test_make_load_after_parallel_train_refuses_then_force(tmp_path, files):
    env = {**os.environ, "STORAGE_URL": str(tmp_path / "data")}
    storage = LocalStorage(tmp_path / "data")
    good = train(files["before"], storage, progress=quiet)
    staged = train(files["last"], storage, activate=False, progress=quiet).version
    make = make_runner(env)
    refused = make("load_after_parallel_train", check=False)
    assert refused.returncode != 0
    error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "refused" in error[0] and "HR@10" in error[0] and "against" in error[0]
    assert registry.active_version(storage) == good.version and registry.staged(storage).version == staged
    versions = make("versions").stdout
    assert "(active)  HR@10" in versions and "(staged)  HR@10" in versions
    make("load_after_parallel_train", "FORCE=1")
    assert registry.active_version(storage) == staged
