"""Scheduled retraining on AWS (template.yaml: RetrainFunction, a container image built from infra/retrain/):
compact the event log, then train from it, alone or with files (RETRAIN_DATA), through the usual quality gate."""

from __future__ import annotations

from typing import Any

from recommender.core.errors import ModelRefused
from recommender.core.settings import get_settings
from recommender.core.storage import open_storage
from recommender.training.event_compaction import compact
from recommender.training.pipeline import train


def handler(event: dict | None = None, context: Any = None) -> dict:
    """Lambda entry point (an EventBridge schedule invokes it): what was compacted and trained, as JSON.

    A model the gate refuses is staged, not activated, and reported without failing the invocation (the active
    model serves on); any other error fails it, so that the schedule's failure metrics and retries see it."""
    settings = get_settings()
    storage = open_storage(settings)
    compaction = compact(storage, progress=print)
    for line in compaction.lines():
        print(line)
    data = (event or {}).get("data") or settings.retrain_data
    try:
        result = train(
            data,
            storage,
            keep_versions=settings.keep_versions,
            gate_margin=settings.model_gate_margin,
            encoding=settings.encoding,
            max_memory_gb=settings.max_training_gb,
            progress=print,
        )
    except ModelRefused as err:
        print(f"not activated: {err.message}")
        return {"data": data, "activated": False, "refused": err.message}
    return {"data": data, "activated": True, "version": result.version, "seconds": round(result.seconds, 1)}
