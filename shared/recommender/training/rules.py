"""Merchandising rules: reading a YAML file (block, do_not_pair, pin, boost, bury), validating all of it, and
publishing it as a rules version (make rules). A file with any error is refused whole, with one line naming the
problem, and the rules in force stay."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from recommender.core import registry
from recommender.core.errors import DataFileError
from recommender.core.feed_and_rules import (
    RULES_FILE,
    RULES_SOURCE,
    SELECTOR_KEYS,
    brand_key,
    category_key,
    category_keys,
)
from recommender.core.registry import utcnow
from recommender.core.storage import Storage

MAX_POSITION = 100
TOP_KEYS = ("block", "do_not_pair", "pin", "boost", "bury")
BLOCK_KEYS = {"codes": "code", "categories": "category", "brands": "brand"}


class RulesError(DataFileError):
    """A rules file that cannot be used; the message names the entry and the problem."""


@dataclass(frozen=True)
class Known:
    """What the current model and feed know, to warn about rules naming anything else; and what the feed says of
    each code, to refuse pins of blocked items."""

    codes: set[str]
    categories: set[str]            # category keys
    brands: set[str]                # brand keys
    item_categories: dict[str, list[str]]
    item_brand: dict[str, str]


def _strings(value: object, where: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or str(v).strip() == "":
            raise RulesError(f"{where}: expected a non-empty text or a list of them, got {v!r}")
        out.append(str(v).strip())
    return out


def _selector(value: object, where: str, keys: tuple[str, ...] = SELECTOR_KEYS) -> dict[str, list[str]]:
    if not isinstance(value, dict) or len(value) != 1:
        raise RulesError(f"{where}: expected one of {', '.join(k + ': ...' for k in keys)}, got {value!r}")
    (key, raw), = value.items()
    if key not in keys:
        raise RulesError(f"{where}: unknown key {key!r}; use {' or '.join(keys)}")
    return {key: _strings(raw, f"{where}.{key}")}


def _mapping(value: object, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise RulesError(f"{where}: expected a mapping, got {value!r}")
    for key in value:
        if key not in allowed:
            raise RulesError(f"{where}: unknown key {key!r}; allowed: {', '.join(allowed)}")
    for key in required:
        if key not in value:
            raise RulesError(f"{where}: missing {key!r}")
    return value


def _entries(value: object, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RulesError(f"{where}: expected a list of entries, got {value!r}")
    return value


def _factor(value: object, where: str, below_one: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise RulesError(f"{where}: factor must be a positive number, got {value!r}")
    if below_one and value >= 1:
        raise RulesError(f"{where}: a bury factor must be below 1 (use boost to raise items), got {value!r}")
    return float(value)


def validate(raw: object) -> dict:
    """The stored form (core.feed_and_rules's rules.json) of a parsed YAML document; RulesError on the first problem."""
    if raw is None:
        raw = {}
    top = _mapping(raw, "rules", TOP_KEYS)
    rules: dict = {"block": {"codes": [], "categories": [], "brands": []}, "do_not_pair": [], "pin": [], "boost": []}
    block = top.get("block") or {}
    for key, values in _mapping(block, "block", tuple(BLOCK_KEYS)).items():
        rules["block"][key] = _strings(values, f"block.{key}") if values is not None else []
    for i, entry in enumerate(_entries(top.get("do_not_pair"), "do_not_pair")):
        where = f"do_not_pair[{i}]"
        entry = _mapping(entry, where, ("basket", "item"), ("basket", "item"))
        rules["do_not_pair"].append({"basket": _selector(entry["basket"], f"{where}.basket"),
                                     "item": _selector(entry["item"], f"{where}.item")})
    for i, entry in enumerate(_entries(top.get("pin"), "pin")):
        where = f"pin[{i}]"
        entry = _mapping(entry, where, ("basket", "item", "position"), ("basket", "item"))
        item = _selector(entry["item"], f"{where}.item", ("code",))
        if len(item["code"]) != 1:
            raise RulesError(f"{where}.item: a pin places one code, got {len(item['code'])}")
        position = entry.get("position", 1)
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= MAX_POSITION:
            raise RulesError(f"{where}.position: must be a whole number from 1 to {MAX_POSITION}, got {position!r}")
        rules["pin"].append({"basket": _selector(entry["basket"], f"{where}.basket"), "item": item,
                             "position": position})
    for name in ("boost", "bury"):
        for i, entry in enumerate(_entries(top.get(name), name)):
            where = f"{name}[{i}]"
            entry = _mapping(entry, where, (*SELECTOR_KEYS, "factor"), ("factor",))
            selector = {k: v for k, v in entry.items() if k != "factor"}
            if name == "bury" and "factor" not in entry:
                raise RulesError(f"{where}: missing 'factor'")
            rules["boost"].append({**_selector(selector, where), "factor": _factor(entry["factor"], where,
                                                                                    below_one=name == "bury")})
    return rules


def blocked(rules: dict, code: str, known: Known) -> bool:
    """Whether the block list removes this code (by itself, one of its categories, or its brand)."""
    block = rules["block"]
    if code in block["codes"]:
        return True
    categories = {category_key(c) for c in block["categories"]}
    if categories & set(known.item_categories.get(code, ())):
        return True
    return known.item_brand.get(code) in {brand_key(b) for b in block["brands"]}


def check(rules: dict, known: Known) -> list[str]:
    """Refuse pins of blocked items (RulesError); return warnings naming codes, categories and brands that
    neither the current model nor the feed knows (accepted: a later model or feed may)."""
    for i, pin in enumerate(rules["pin"]):
        code = pin["item"]["code"][0]
        if blocked(rules, code, known):
            raise RulesError(f"pin[{i}]: item {code} is blocked by the same rules; a pinned item must be allowed")
    names: dict[str, set[str]] = {"code": set(), "category": set(), "brand": set()}
    block = rules["block"]
    for key, kind in BLOCK_KEYS.items():
        names[kind].update(block[key])
    for entry in rules["do_not_pair"] + rules["pin"]:
        for side in (entry["basket"], entry["item"]):
            for kind, values in side.items():
                names[kind].update(values)
    for entry in rules["boost"]:
        for kind in SELECTOR_KEYS:
            names[kind].update(entry.get(kind, ()))
    unknown = {
        "code": sorted(c for c in names["code"] if c not in known.codes),
        "category": sorted(c for c in names["category"] if category_key(c) not in known.categories),
        "brand": sorted(b for b in names["brand"] if brand_key(b) not in known.brands),
    }
    return [f"warning: {len(values)} {kind}(s) unknown to the current model and feed (rules kept for them): "
            f"{', '.join(values[:10])}{' ...' if len(values) > 10 else ''}" for kind, values in unknown.items() if values]


def read_rules(path: str | Path) -> tuple[dict, bytes]:
    """The validated rules of a YAML file, and the file's bytes; RulesError (one line) when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise RulesError(f"file not found: {path}" if not path.exists() else f"not a file: {path}")
    data = path.read_bytes()
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RulesError(f"{path.name} is not UTF-8 text: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RulesError(f"{path.name} is not valid YAML{where}: {problem}") from None
    try:
        return validate(raw), data
    except RulesError as err:
        raise RulesError(f"{path.name}: {err.message}") from None


def known_from(codes: list[str], feed_items: dict[str, dict]) -> Known:
    """What the current model (its codes) and feed (codes, categories, brands) know."""
    item_categories = {code: category_keys(a["category"]) for code, a in feed_items.items() if a.get("category")}
    item_brand = {code: brand_key(a["brand"]) for code, a in feed_items.items() if a.get("brand")}
    return Known(set(codes) | set(feed_items), {k for ks in item_categories.values() for k in ks},
                 set(item_brand.values()), item_categories, item_brand)


def describe(rules: dict) -> list[str]:
    """How many rules of each kind, for the console."""
    block = rules["block"]
    return [f"block: {len(block['codes'])} code(s), {len(block['categories'])} categor(ies), "
            f"{len(block['brands'])} brand(s); do_not_pair: {len(rules['do_not_pair'])}; pin: {len(rules['pin'])}; "
            f"boost/bury: {len(rules['boost'])}"]


def publish_rules(storage: Storage, path: str | Path, known: Known, keep_versions: int = 5,
                  progress: Callable[[str], None] = print, now: Callable = utcnow) -> dict:
    """Validate a rules file in full, store it as a new rules version, activate it and prune old ones."""
    path = Path(path)
    rules, source = read_rules(path)
    try:
        warnings = check(rules, known)
    except RulesError as err:
        raise RulesError(f"{path.name}: {err.message}") from None
    for line in describe(rules) + warnings:
        progress(line)
    stored = json.dumps(rules, ensure_ascii=False, sort_keys=True, indent=1).encode()
    info = {"source": {"file": path.name, "bytes": len(source)}, "warnings": warnings}
    manifest = registry.publish_files(storage, {RULES_FILE: stored, RULES_SOURCE: source}, info, registry.RULES, now)
    registry.activate(storage, manifest["version"], now, kind=registry.RULES)
    registry.prune(storage, keep_versions, now=now, kind=registry.RULES)
    progress(f"activated rules version {manifest['version']} (serving processes pick it up within MODEL_POLL_SECONDS)")
    return manifest


def show(storage: Storage) -> list[str]:
    """What rules_show prints: the active rules version, its summary and warnings, and the file as uploaded."""
    pointer = registry.active(storage, registry.RULES)
    if pointer is None:
        return [f"no merchandising rules in {storage.url} (make rules PATH_TO_RULES=<file> uploads some)"]
    manifest = registry.read_manifest(storage, pointer.version, registry.RULES)
    rules = json.loads(registry.read_verified(storage, pointer.version, RULES_FILE, registry.RULES))
    source = registry.read_verified(storage, pointer.version, RULES_SOURCE, registry.RULES).decode()
    return [f"rules version {pointer.version} (created {manifest['created_at']}, from {manifest['source']['file']})",
            *describe(rules), *manifest.get("warnings", []),
            f"earlier versions (make rules_rollback): {', '.join(pointer.previous) or 'none'}", "---",
            source.rstrip("\n")]
