"""A replaced model is freed as soon as nothing uses it: no reference cycle waits for the garbage collector (a
server swapping models every few minutes would otherwise hold several in memory; found by make soak)."""

import gc
import weakref

import pytest

from recommender.core import registry
from recommender.serving.model import load_model


@pytest.mark.parametrize("answer_cache", [0, 100])
def test_models_and_their_views_need_no_garbage_collection(trained_storage, answer_cache):
    model = load_model(trained_storage, registry.active_version(trained_storage), answer_cache=answer_cache)
    model.warm()
    view = model.with_policy(None)
    code = model.items.codes[0]
    assert model.recommend([code], 5).items == view.recommend([code], 5).items
    refs = [weakref.ref(model), weakref.ref(view)]
    gc.disable()
    try:
        del model, view
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()
