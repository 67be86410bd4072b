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
from recommender.training.pipeline import TrainingParams, train
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
    # Too small to measure: the year's last 19 invoices; and one line of each of its last 300 invoices with one
    # 2-item basket before them (nothing held out can be scored).
    invoices = frame.InvoiceNo.drop_duplicates()
    frame[frame.InvoiceNo.isin(invoices.iloc[-19:])].to_csv(folder / "tiny.csv", index=False)
    singles = frame[frame.InvoiceNo.isin(invoices.iloc[-300:])].drop_duplicates("InvoiceNo")
    pair = frame[frame.InvoiceNo == invoices.iloc[0]].drop_duplicates("StockCode").iloc[:2]
    pd.concat([pair, singles]).to_csv(folder / "singles.csv", index=False)
    # Another shop's file over the same dates: the same purchases under codes the year's model does not know.
    other = frame[when < cut].assign(StockCode="Z" + frame.StockCode)
    other.to_csv(folder / "other.csv", index=False)
    return {
        "year": year,
        "before": folder / "before.csv",
        "last": folder / "last20days.csv",
        "tiny": folder / "tiny.csv",
        "singles": folder / "singles.csv",
        "other": folder / "other.csv",
    }


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
    message = refused.value.message
    assert "each on its own held-out baskets" in message
    # The reason given is what the dates say, not a claim about which baskets the active model saw.
    assert "only 0 of the new model's are dated outside the purchases the active one learned from" in message
    assert "learned from the new one's" not in message


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
    comparison = gate.compare(storage, year.version, older.version)
    assert year.manifest["evaluation"]["cutoff"] < "2011-12-01"
    assert gate.MIN_CASES <= comparison.cases < year.manifest["evaluation"]["cases"]
    assert comparison.first >= "2011-12-01"


def test_an_active_model_from_before_holdouts_does_not_open_the_gate(tmp_path, files):
    # Which of the new model's held-out baskets it learned from is unknown, and it has no figures of its own:
    # nothing can be compared, so the new model waits for FORCE.
    storage = LocalStorage(tmp_path)
    old = train(files["before"], storage, progress=quiet)
    manifest = registry.read_manifest(storage, old.version)
    del manifest["period"], manifest["evaluation"]
    storage.write(registry.artifact_key(old.version, "manifest.json"), json.dumps(manifest).encode())
    with pytest.raises(ModelRefused) as refused:
        train(files["last"], storage, progress=quiet)
    assert registry.active_version(storage) == old.version
    assert "trained before training recorded the dates it learned from" in refused.value.message
    lines = []
    new = train(files["last"], storage, force=True, progress=lines.append)
    assert registry.active_version(storage) == new.version
    assert any(line.endswith("activated anyway (forced)") for line in lines)


@pytest.mark.parametrize(
    "name, why",
    [
        ("tiny", "its 19 baskets are too few to hold any out"),
        ("singles", "none of its held-out baskets could be scored"),
    ],
)
def test_an_unmeasurable_model_is_staged_not_activated(tmp_path, files, monkeypatch, capsys, name, why):
    from recommender import cli

    storage = LocalStorage(tmp_path)
    good = train(files["before"], storage, progress=quiet)
    monkeypatch.setenv("STORAGE_URL", str(tmp_path))
    # Exit status 3: trained and kept, not activated (a failure is 1).
    assert cli.main(["train", str(files[name])]) == ModelRefused.EXIT_CODE
    err = capsys.readouterr().err.strip().splitlines()
    staged = registry.staged(storage).version
    assert registry.active_version(storage) == good.version and staged != good.version
    assert len(err) == 1 and err[0].startswith(f"refused: the new model {staged} cannot be measured ({why})")
    hr = good.manifest["evaluation"]["model"]["hr"]
    assert f"as good as the active {good.version} (HR@10 {hr:.3f} on" in err[0] and "FORCE=1" in err[0]
    assert cli.main(["promote", "--force"]) == 0
    assert registry.active_version(storage) == staged


def test_an_unmeasured_active_model_does_not_open_the_gate(tmp_path, files):
    storage = LocalStorage(tmp_path)
    tiny = train(files["tiny"], storage, force=True, progress=quiet)
    # The new model's held-out baskets the tiny one cannot have seen (other dates) decide.
    lines = []
    last = train(files["last"], storage, progress=lines.append)
    compared = next(line for line in lines if "the active model" in line)
    assert compared.startswith("compared with the active model: HR@10 ")
    assert f"for the active {tiny.version}" in compared and "held-out baskets from" in compared
    assert registry.active_version(storage) == last.version
    # An active model trained on every basket of the year has no figures and saw every held-out day: refused.
    storage = LocalStorage(tmp_path / "whole")
    whole = train(files["year"], storage, TrainingParams(holdout=None), progress=quiet)
    with pytest.raises(ModelRefused) as refused:
        train(files["last"], storage, progress=quiet)
    assert registry.active_version(storage) == whole.version
    message = refused.value.message
    assert f"the active model {whole.version} cannot be measured (it was trained with HOLDOUT=0" in message
    assert "only 0 of the new model's are dated outside" in message and "at least 30 are needed" in message


def test_a_model_of_another_catalog_is_scored_on_what_the_active_one_never_saw(tmp_path, files):
    # The dates overlap, but the active model knows none of the new file's products: it cannot have learned from
    # its baskets, so it is scored on them (and loses), rather than each model on its own file.
    storage = LocalStorage(tmp_path)
    other = train(files["other"], storage, progress=quiet)
    lines = []
    year = train(files["year"], storage, progress=lines.append)
    assert registry.active_version(storage) == year.version
    compared = next(line for line in lines if line.startswith("compared with the active model"))
    cases = year.manifest["evaluation"]["cases"]
    assert f"against 0.000 for the active {other.version}" in compared
    assert f"on {cases:,} held-out baskets from" in compared
    assert f"{cases:,} of them with a product the active model does not know" in compared


def test_margin_and_minimum_cases():
    def comparison(hr_new, hr_active, cases=100):
        return Comparison("new", "old", cases, None, None, {"hr": hr_new, "mrr": 0.1}, {"hr": hr_active, "mrr": 0.1})

    assert comparison(0.26, 0.30).worse(0.10)  # 13% below
    assert not comparison(0.28, 0.30).worse(0.10)  # 7% below: noise, not a wrong file
    assert not comparison(0.10, 0.30, cases=gate.MIN_CASES - 1).worse(0.10)
    assert not comparison(0.0, 0.0).worse(0.10)
    own = Comparison("new", "old", 100, None, None, {"hr": 0.2, "mrr": 0.1}, {"hr": 0.3, "mrr": 0.1}, own_cases=20)
    assert not own.worse(0.10) and "(100 and 20)" in own.describe()


@pytest.mark.slow
def test_make_load_after_parallel_train_and_make_activate_refuse_then_force(tmp_path, files):
    env = {**os.environ, "STORAGE_URL": str(tmp_path / "data")}
    storage = LocalStorage(tmp_path / "data")
    good = train(files["before"], storage, progress=quiet)
    staged = train(files["last"], storage, activate=False, progress=quiet).version
    make = make_runner(env)
    refused = make("load_after_parallel_train", check=False)
    assert refused.returncode != 0 and "Error 3" in refused.stderr  # make names the command's exit status
    lines = [line for line in refused.stderr.splitlines() if line.startswith(("refused:", "error:"))]
    assert len(lines) == 1 and lines[0].startswith("refused: the staged model is clearly worse")
    assert "HR@10" in lines[0] and "against" in lines[0]
    assert registry.active_version(storage) == good.version and registry.staged(storage).version == staged
    # Each version with what tells it apart: the file, its dates, rows, products, held-out HR@10, engine.
    table = make("versions").stdout.splitlines()
    table = table[next(i for i, line in enumerate(table) if line.startswith("VERSION")) :]
    assert table[0].split() == ["VERSION", "STATE", "FILE", "DATES", "ROWS", "PRODUCTS", "HR@10", "ENGINE"]
    m = good.manifest
    assert table[1].split() == [
        good.version,
        "active",
        "before.csv",
        m["period"]["first"][:10],
        "to",
        m["period"]["last"][:10],
        f"{m['counts']['rows_read']:,}",
        f"{m['counts']['items']:,}",
        f"{m['evaluation']['model']['hr']:.3f}",
        "single",
    ]
    assert table[2].split()[:3] == [staged, "staged", "last20days.csv"]
    # make activate: the same comparison, refused the same way (a unique beginning of the version will do).
    refused = make("activate", f"VERSION={staged[:22]}", check=False)
    assert refused.returncode != 0 and "Error 3" in refused.stderr
    (line,) = [line for line in refused.stderr.splitlines() if line.startswith("refused:")]
    assert line.startswith("refused: the chosen model is clearly worse than the active one: HR@10")
    assert line.endswith(f"Nothing changed: `make activate VERSION={staged} FORCE=1` activates it anyway")
    assert registry.active_version(storage) == good.version
    forced = make("activate", f"VERSION={staged}", "FORCE=1")
    assert "activated anyway (forced)" in forced.stdout
    assert f"activated version {staged} (it was staged: nothing is staged now)" in forced.stdout
    assert registry.active_version(storage) == staged and registry.staged(storage) is None
    back = make("activate", f"VERSION={good.version}")
    assert (
        f"compared with the active model: HR@10 {m['evaluation']['model']['hr']:.3f} for the chosen model"
        in back.stdout
    )
    assert registry.active_version(storage) == good.version
