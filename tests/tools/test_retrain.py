"""The scheduled retraining's handler: compaction, then training from the event log, a refusal reported."""

from recommender.core import registry
from recommender.core.settings import get_settings
from recommender.core.storage import open_storage
from recommender.tools.retrain import handler
from tests.training.test_train_from_events import record


def test_handler_compacts_then_trains_from_events(tiny_csv, capsys):
    storage = open_storage(get_settings())
    baskets = record(storage, tiny_csv)
    answer = handler({}, None)
    assert answer["activated"] and answer["data"] == "events:"
    assert storage.list("events/raw/") == []  # the hours are long over: every segment compacted and removed
    manifest = registry.read_manifest(storage, registry.active_version(storage))
    assert manifest["counts"]["baskets"] == baskets and manifest["version"] == answer["version"]
    assert "compacted in " in capsys.readouterr().out


def test_a_refused_model_is_reported_not_raised(tiny_csv, monkeypatch):
    from recommender.core.errors import ModelRefused
    from recommender.tools import retrain

    def refuse(*args, **kwargs):
        raise ModelRefused("clearly worse")

    monkeypatch.setattr(retrain, "train", refuse)
    assert handler({"data": "orders.csv,events:"}, None) == {
        "data": "orders.csv,events:",
        "activated": False,
        "refused": "clearly worse",
    }
