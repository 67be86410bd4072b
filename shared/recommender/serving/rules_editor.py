"""The console's Rules page: the rules in force as a document, a draft checked as it is typed (the messages of
`make rules`), its preview over real baskets (each answer before and after, the changes counted), publishing
through the same validation and versioning as `make rules`, and rolling back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from recommender.core import registry
from recommender.core.errors import Conflict, NotFound, StorageError
from recommender.core.feed_and_rules import FEED_FILE, RULES_FILE, in_force
from recommender.core.rules_form import Known, RulesError, check, describe, known_from, publish, validate
from recommender.core.storage import Storage
from recommender.serving.model import Model, ModelHolder

# The baskets a preview answers: this many of the model's sample invoices (the same ones each time, so a draft
# edited and previewed again is compared on the same baskets), and any the user typed.
PREVIEW_SAMPLES = 20
PREVIEW_N = 10
SOURCE_NAME = "console.json"  # the file name a version published from the console's form records
YAML_NAME = "console.yaml"  # ... and from its text view (the YAML a rules file holds)
TEXT_NAME = "the text"  # how a message names the text view ("the text is not valid YAML at line 3, ...")


def _from_yaml(text: str) -> Any:
    """The document of the text view's YAML, read as make rules reads a file (pyyaml is imported on first use:
    only the text view needs it)."""
    from recommender.core import rules_yaml

    return rules_yaml.load(text, TEXT_NAME)


def draft_of(rules: Any, text: str | None) -> Any:
    """The draft's document: the one given, or the one its YAML text holds (RulesError when it is not YAML)."""
    return _from_yaml(text) if text is not None else rules


def document(rules: dict) -> dict:
    """The stored rules (rules.json) as a rules file's document: boosts with a factor below 1 are bury entries."""
    boosts = [e for e in rules.get("boost", []) if e["factor"] >= 1]
    buries = [e for e in rules.get("boost", []) if e["factor"] < 1]
    return {
        "block": rules.get("block", {"codes": [], "categories": [], "brands": []}),
        "do_not_pair": rules.get("do_not_pair", []),
        "pin": [{**p, "item": {"code": p["item"]["code"][0]}} for p in rules.get("pin", [])],
        "boost": boosts,
        "bury": buries,
    }


def current(storage: Storage) -> dict:
    """The active rules version (None without one), its document, summary and warnings, and the earlier versions."""
    pointer = registry.active(storage, registry.RULES)
    if pointer is None:
        return {"version": None, "rules": document({}), "summary": [], "warnings": [], "previous": [], "source": None}
    manifest = registry.read_manifest(storage, pointer.version, registry.RULES)
    rules = json.loads(registry.read_verified(storage, pointer.version, RULES_FILE, registry.RULES))
    return {
        "version": pointer.version,
        "created_at": manifest.get("created_at"),
        "source": (manifest.get("source") or {}).get("file"),
        "rules": document(rules),
        "summary": describe(rules),
        "warnings": manifest.get("warnings", []),
        "previous": list(pointer.previous),
    }


def _split(message: str) -> dict:
    """A RulesError's message as {"place", "message"}: "pin[0].position: must be ..." is at pin[0].position."""
    place, sep, text = message.partition(": ")
    return {"place": place, "message": text} if sep and " " not in place else {"place": "rules", "message": message}


@lru_cache(maxsize=4)
def _known(storage: Storage, model_version: str, feed_version: str | None) -> Known:
    """What the model and feed know (read once per model and feed version)."""
    items = (
        json.loads(registry.read_verified(storage, feed_version, FEED_FILE, registry.FEED))["items"]
        if feed_version
        else {}
    )
    return known_from(_codes(storage, model_version), items)


def _codes(storage: Storage, model_version: str) -> list[str]:
    from recommender.core.items import ITEMS_FILE

    return json.loads(registry.read_verified(storage, model_version, ITEMS_FILE, registry.MODELS))["codes"]


def known(storage: Storage, model: Model) -> Known:
    """What the served model and the active feed know."""
    pointer = registry.active(storage, registry.FEED)
    return _known(storage, model.version, pointer.version if pointer else None)


def checked(raw: Any, storage: Storage, model: Model, text: str | None = None) -> dict:
    """A draft document (or its YAML text) checked as `make rules` checks a file: {"ok", "error" ({"place",
    "message"}, and "line" for text) or None, "summary", "warnings", "rules" (the stored form, when ok), and for
    text its "document" (null when it is not YAML or not a mapping)}."""
    extra: dict[str, Any] = {}
    try:
        if text is not None:
            from recommender.core import rules_yaml

            extra["document"] = None
            raw = _from_yaml(text)
            # Only a mapping can be a rules document (and fill the form); YAML also reads "a, b" or "- x" as one.
            extra["document"] = rules_yaml.plain(raw) if isinstance(raw, dict) else None
        rules = validate(raw)
        warnings = check(rules, known(storage, model))
    except RulesError as err:
        error = _split(err.message)
        if text is not None:
            error["line"] = getattr(err, "line", None) or _line_of(text, error["place"])
        return {"ok": False, "error": error, "summary": [], "warnings": [], **extra}
    if text is not None:
        extra["document"] = document(rules)
    return {"ok": True, "error": None, "summary": describe(rules), "warnings": warnings, "rules": rules, **extra}


def _line_of(text: str, place: str) -> int | None:
    from recommender.core import rules_yaml

    return rules_yaml.line_of(text, place) if place != "rules" else None


def _sample_baskets(storage: Storage, model: Model, count: int) -> list[tuple[str, list[str]]]:
    """count of the model's sample invoices, spread evenly over them (the same ones for the same model)."""
    key = registry.artifact_key(model.version, registry.SAMPLES)
    try:
        invoices = json.loads(storage.read(key))["invoices"]
    except NotFound:
        return []
    except (ValueError, KeyError, TypeError):
        raise StorageError(f"the sample invoices of model version {model.version} are damaged") from None
    step = max(1, len(invoices) // max(count, 1))
    return [(str(i["invoice"]), [c for c in i["items"] if c in model.items.index]) for i in invoices[::step][:count]]


def _codes_of(answer: Any) -> list[dict]:
    return [
        {"stock_code": p.item.stock_code, "description": p.item.description, "source": getattr(p, "source", "model")}
        for p in answer.items
    ]


def compare(before: list[dict], after: list[dict]) -> dict:
    """One basket's answers side by side: each item after marked new, pinned, moved (from) or same; the items
    removed; and counts. An item is moved when its order among the items of both answers changed: one that only
    slid a place because another was removed or pinned above it is the same."""
    was = {e["stock_code"]: i for i, e in enumerate(before)}
    now = {e["stock_code"] for e in after}
    common_before = [e["stock_code"] for e in before if e["stock_code"] in now]
    common_after = [e["stock_code"] for e in after if e["stock_code"] in was]
    order_before = {code: i for i, code in enumerate(common_before)}
    order_after = {code: i for i, code in enumerate(common_after)}
    marked, moved, pinned, added = [], 0, 0, 0
    for entry in after:
        code = entry["stock_code"]
        old = was.get(code)
        extra = {}
        if entry["source"] == "pinned" and not (old is not None and before[old]["source"] == "pinned"):
            change = "pinned"
            pinned += 1
        elif old is None:
            change = "new"
            added += 1
        elif order_before[code] != order_after[code]:
            change, extra = "moved", {"was": old + 1}
            moved += 1
        else:
            change = "same"
        marked.append({**entry, "change": change, **extra})
    removed = [{**e, "change": "removed"} for e in before if e["stock_code"] not in now]
    return {
        "before": before,
        "after": marked,
        "removed": removed,
        "changed": before != [{k: e[k] for k in ("stock_code", "description", "source")} for e in marked],
        "counts": {"removed": len(removed), "pinned": pinned, "moved": moved, "added": added},
    }


def preview(
    holder: ModelHolder,
    storage: Storage,
    raw: Any,
    baskets: list[list[str]],
    as_of: datetime | None,
    samples: int = PREVIEW_SAMPLES,
    n: int = PREVIEW_N,
    text: str | None = None,
) -> dict:
    """What a draft (or its YAML text) changes, before anything is published: over the model's sample invoices
    and the baskets given, each answer under the rules in force and under the draft (both as of a time: now by
    default)."""
    model = holder.current()
    result = checked(raw, storage, model, text)
    if not result["ok"]:
        place, message = result["error"]["place"], result["error"]["message"]
        raise RulesError(message if place == "rules" else f"{place}: {message}")
    at = (as_of or datetime.now(UTC)).astimezone(UTC)
    active_version, active = holder.active_rules()
    old = holder.draft(in_force(active, at) if active else None, active_version or "none")
    new = holder.draft(in_force(result["rules"], at), "draft")
    shown = [("typed", [c.strip() for c in b if c.strip()]) for b in baskets]
    shown += _sample_baskets(storage, model, samples)
    rows, totals = [], {"baskets": 0, "affected": 0, "removed": 0, "pinned": 0, "moved": 0, "added": 0}
    for invoice, basket in shown:
        if not basket:
            continue
        diff = compare(_codes_of(old.recommend(basket, n)), _codes_of(new.recommend(basket, n)))
        descriptions = [
            model.items.descriptions[model.items.index[c]] if c in model.items.index else "" for c in basket
        ]
        rows.append(
            {
                "invoice": invoice,
                "basket": [{"stock_code": c, "description": d} for c, d in zip(basket, descriptions)],
                **diff,
            }
        )
        totals["baskets"] += 1
        totals["affected"] += diff["changed"]
        for key in ("removed", "pinned", "moved", "added"):
            totals[key] += diff["counts"][key]
    return {
        "as_of": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model_version": model.version,
        "rules_version": active_version,
        "counts": totals,
        "summary": result["summary"],
        "warnings": result["warnings"],
        "baskets": rows,
    }


def publish_draft(
    storage: Storage, model: Model, raw: Any, keep_versions: int, max_stored_bytes: int, text: str | None = None
) -> dict:
    """Publish a draft (or its YAML text, kept as the version's source) as `make rules` publishes a file:
    validated in full, stored as a new version, activated."""
    rules = validate(draft_of(raw, text))
    source = text.encode() if text is not None else json.dumps(raw, ensure_ascii=False, indent=1).encode()
    lines: list[str] = []
    manifest = publish(
        storage,
        rules,
        source,
        YAML_NAME if text is not None else SOURCE_NAME,
        known(storage, model),
        keep_versions,
        lines.append,
        max_stored_bytes=max_stored_bytes,
    )
    return {"version": manifest["version"], "summary": describe(rules), "warnings": manifest.get("warnings", [])}


def roll_back(storage: Storage) -> dict:
    """Re-activate the rules version active before the current one (as make rules_rollback); the first version
    published rolls back to no rules at all (version "none"); Conflict when there are none in force."""
    try:
        _data, tag = storage.read_tagged(registry.RULES.active)
    except NotFound:
        raise Conflict("no rules are in force: there is nothing to roll back") from None
    pointer = registry.read_pointer(storage, registry.RULES.active, registry.RULES)
    if pointer is not None and not pointer.previous:
        # Only if the pointer is still the one read: a publish meanwhile is not undone unseen.
        if not storage.delete_if(registry.RULES.active, tag):
            raise Conflict("the rules changed while rolling back (another publish came first): nothing was rolled back")
        return {"version": "none", "summary": ["no rules are in force now"]}
    return {"version": registry.rollback(storage, registry.RULES, notify=lambda _message: None)}
