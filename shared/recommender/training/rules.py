"""Merchandising rules files: reading the YAML file (make rules), its JSON Schema (make rules_schema) and what
rules_show prints. The document's form, its validation and publishing live in core/rules_form.py, which the
console's routes share. A file with any error is refused whole, with one line naming the place and the problem,
and the rules in force stay."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from recommender.core import registry, rules_yaml
from recommender.core.feed_and_rules import RULES_FILE, RULES_SOURCE
from recommender.core.registry import utcnow
from recommender.core.rules_form import (  # noqa: F401 (re-exported: make rules and its tests name them here)
    MAX_RULES_BYTES,
    MAX_RULES_STORED_BYTES,
    Known,
    RulesError,
    RulesFile,
    check,
    describe,
    in_force,
    json_schema,
    known_from,
    publish,
    validate,
)
from recommender.core.storage import Storage


def read_rules(path: str | Path, max_bytes: int = MAX_RULES_BYTES) -> tuple[dict, bytes]:
    """The validated rules of a YAML file, and the file's bytes; RulesError (one line) when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise RulesError(f"file not found: {path}" if not path.exists() else f"not a file: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise RulesError(
            f"{path.name} is {size:,} bytes; a rules file may hold at most {max_bytes:,} (MAX_RULES_BYTES)"
        )
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RulesError(f"{path.name} is not UTF-8 text: {err}") from None
    raw = rules_yaml.load(text, path.name)
    try:
        return validate(raw), data
    except RulesError as err:
        raise RulesError(f"{path.name}: {err.message}") from None


def publish_rules(
    storage: Storage,
    path: str | Path,
    known: Known,
    keep_versions: int = 5,
    progress: Callable[[str], None] = print,
    now: Callable = utcnow,
    max_bytes: int = MAX_RULES_BYTES,
    max_stored_bytes: int = MAX_RULES_STORED_BYTES,
) -> dict:
    """Validate a rules file in full, store it as a new rules version, activate it and prune old ones."""
    path = Path(path)
    rules, source = read_rules(path, max_bytes)
    try:
        return publish(storage, rules, source, path.name, known, keep_versions, progress, now, max_stored_bytes)
    except RulesError as err:
        raise RulesError(f"{path.name}: {err.message}") from None


def show(storage: Storage) -> list[str]:
    """What rules_show prints: the active rules version, its summary and warnings, and the file as uploaded."""
    pointer = registry.active(storage, registry.RULES)
    if pointer is None:
        return [f"no merchandising rules in {storage.url} (make rules PATH_TO_RULES=<file> uploads some)"]
    manifest = registry.read_manifest(storage, pointer.version, registry.RULES)
    rules = json.loads(registry.read_verified(storage, pointer.version, RULES_FILE, registry.RULES))
    source = registry.read_verified(storage, pointer.version, RULES_SOURCE, registry.RULES).decode()
    return [
        f"rules version {pointer.version} (created {manifest['created_at']}, from {manifest['source']['file']})",
        *describe(rules),
        *manifest.get("warnings", []),
        f"earlier versions (make rules_rollback): {', '.join(pointer.previous) or 'none'}",
        "---",
        source.rstrip("\n"),
    ]
