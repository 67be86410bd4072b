"""Merchandising rules: the YAML file (block, do_not_pair, pin, boost, bury) described as pydantic models, its JSON
Schema (make rules_schema), validating a file and publishing it as a rules version (make rules). A file with any
error is refused whole, with one line naming the place and the problem, and the rules in force stay."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from recommender.core import registry
from recommender.core.errors import DataFileError
from recommender.core.feed_and_rules import (
    MAX_RULE_FACTOR,
    MIN_RULE_FACTOR,
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
# One rule's factor, and the product of every factor applying to one item (serving holds the product within
# core.feed_and_rules.MIN_TOTAL_FACTOR..MAX_TOTAL_FACTOR): scores stay finite however the rules stack.
MIN_FACTOR, MAX_FACTOR = MIN_RULE_FACTOR, MAX_RULE_FACTOR
# The longest stock code, and category or brand name, a rule may name (Merchant Center allows 50 characters for an
# id and 750 for a category path).
MAX_CODE_LENGTH = 200
MAX_NAME_LENGTH = 750
# The defaults of MAX_RULES_BYTES (the file) and MAX_RULES_STORED_BYTES (its stored form).
MAX_RULES_BYTES = 1 << 20
MAX_RULES_STORED_BYTES = 4 << 20
BLOCK_KEYS = {"codes": "code", "categories": "category", "brands": "brand"}


class RulesError(DataFileError):
    """A rules file that cannot be used; the message names the entry and the problem."""


@dataclass(frozen=True)
class Known:
    """What the current model and feed know, to warn about rules naming anything else; and what the feed says of
    each code, to refuse pins of blocked items."""

    codes: set[str]
    categories: set[str]  # category keys
    brands: set[str]  # brand keys
    item_categories: dict[str, list[str]]
    item_brand: dict[str, str]


# --- The file's form -----------------------------------------------------------------------------------------
# Each check raises PydanticCustomError with the whole sentence, so a refusal reads the same as it did before the
# models existed ("pin[2].position: must be a whole number from 1 to 100, got 0"); pydantic supplies the place.


def _refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError("rules", message)  # no context: braces in the message are not placeholders


class _Loader(yaml.SafeLoader):
    """YAML as a rules file is read: no aliases (*name: one short line could stand for megabytes of text), and
    numbers keep the text they were written as, so an unquoted code is the code typed (0123, 1:30, 0b101 and 12.50
    would otherwise be the numbers 83, 90, 5 and 12.5)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise RulesError(
                f"line {mark.line + 1}, column {mark.column + 1}: aliases (*name) are not accepted in a rules file; "
                "write the values out"
            )
        return super().compose_node(parent, index)


class _Int(int):
    """A YAML integer and the text it was written as."""

    text: str


class _Float(float):
    """A YAML float and the text it was written as."""

    text: str


def _number(kind: type, construct: Callable) -> Callable:
    def build(loader: _Loader, node: yaml.ScalarNode) -> Any:
        value = kind(construct(loader, node))
        value.text = node.value
        return value

    return build


_Loader.add_constructor("tag:yaml.org,2002:int", _number(_Int, yaml.SafeLoader.construct_yaml_int))
_Loader.add_constructor("tag:yaml.org,2002:float", _number(_Float, yaml.SafeLoader.construct_yaml_float))


def _texts(value: Any, longest: int = MAX_NAME_LENGTH) -> list[str]:
    out = []
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or str(v).strip() == "":
            # YAML reads yes, no, on, off, true, false and dates unquoted as other things than text.
            quote = " (put it in quotes)" if v is not None and not isinstance(v, (str, list, dict)) else ""
            raise _refuse(f"expected a non-empty text or a list of them, got {v!r}{quote}")
        # YAML reads 22423 as a number: a code is its text, as written in the file (getattr: a document given as
        # Python values, not read from YAML, has no text to keep).
        text = str(getattr(v, "text", v)).strip()
        if len(text) > longest:
            raise _refuse(f"{text[:20]!r}... is {len(text):,} characters long; at most {longest} are accepted")
        out.append(text)
    return out


def _codes(value: Any) -> list[str]:
    return _texts(value, MAX_CODE_LENGTH)


def _entries(value: Any) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _refuse(f"expected a list of entries, got {value!r}")
    return value


def _position(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_POSITION:
        raise _refuse(f"must be a whole number from 1 to {MAX_POSITION}, got {_plain(value)}")
    return int(value)


def _plain(value: Any) -> str:
    """A value as a message shows it: a number as written in the file, anything else as its repr."""
    return getattr(value, "text", None) or repr(value)


def _factor(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _refuse(f"must be a positive number, got {_plain(value)}")
    if not MIN_FACTOR <= value <= MAX_FACTOR:
        raise _refuse(f"must be from {MIN_FACTOR:g} to {MAX_FACTOR:g}, got {_plain(value)}")
    return float(value)


def _bury_factor(value: Any) -> float:
    factor = _factor(value)
    if factor >= 1:
        raise _refuse(f"a bury factor must be below 1 (use boost to raise items), got {_plain(value)}")
    return factor


def _text_schema(longest: int) -> dict:
    return {"anyOf": [{"type": "string", "pattern": r"\S", "maxLength": longest}, {"type": "number"}]}


_TEXT_SCHEMA = _text_schema(MAX_NAME_LENGTH)  # 22423 is the code '22423'
_TEXTS_SCHEMA = {"anyOf": [_TEXT_SCHEMA, {"type": "array", "items": _TEXT_SCHEMA}]}
_CODE_SCHEMA = _text_schema(MAX_CODE_LENGTH)
_CODES_SCHEMA = {"anyOf": [_CODE_SCHEMA, {"type": "array", "items": _CODE_SCHEMA}]}
# A selector's values: one text or a list of them (None only as the default of a key not given: a null is refused).
Texts = Annotated[list[str] | None, BeforeValidator(_texts), WithJsonSchema(_TEXTS_SCHEMA)]
Codes = Annotated[list[str] | None, BeforeValidator(_codes), WithJsonSchema(_CODES_SCHEMA)]
# A block list's values: the same, and an empty entry ("codes:" alone) is an empty list.
OptionalTexts = Annotated[
    list[str],
    BeforeValidator(lambda v: [] if v is None else _texts(v)),
    WithJsonSchema({"anyOf": [*_TEXTS_SCHEMA["anyOf"], {"type": "null"}]}),
]
OptionalCodes = Annotated[
    list[str],
    BeforeValidator(lambda v: [] if v is None else _codes(v)),
    WithJsonSchema({"anyOf": [*_CODES_SCHEMA["anyOf"], {"type": "null"}]}),
]
Position = Annotated[
    int,
    BeforeValidator(_position),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_POSITION, "default": 1}),
]
Factor = Annotated[
    float,
    BeforeValidator(_factor),
    WithJsonSchema({"type": "number", "minimum": MIN_FACTOR, "maximum": MAX_FACTOR}),
]
BuryFactor = Annotated[
    float,
    BeforeValidator(_bury_factor),
    WithJsonSchema({"type": "number", "minimum": MIN_FACTOR, "exclusiveMaximum": 1}),
]


class _Part(BaseModel):
    """A mapping of the file: unknown keys and missing ones are refused by name, before its values are read."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    keys_hint: ClassVar[str] = ""  # how an unknown key is answered; default: the allowed keys

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _refuse(f"expected a mapping, got {data!r}")
        allowed = list(cls.model_fields)
        for key in data:
            if key not in allowed:
                raise _refuse(f"unknown key {key!r}; {cls.keys_hint or 'allowed: ' + ', '.join(allowed)}")
        for name, info in cls.model_fields.items():
            if info.is_required() and name not in data:
                raise _refuse(f"missing {name!r}")
        cls._check(data)
        return data

    @classmethod
    def _check(cls, data: dict) -> None:
        """Checks of the mapping as a whole (subclasses)."""


def _one_of(keys: tuple[str, ...], value: Any) -> None:
    if not isinstance(value, dict) or len(value) != 1:
        raise _refuse(f"expected one of {', '.join(k + ': ...' for k in keys)}, got {value!r}")


class _OneKey(_Part):
    """A mapping of exactly one of its keys."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    @model_validator(mode="before")
    @classmethod
    def _one(cls, data: Any) -> Any:  # runs before _keys: "expected one of" is the first thing to say
        _one_of(tuple(cls.model_fields), data)
        return data

    def stored(self) -> dict[str, list[str]]:
        """core.feed_and_rules's selector: {key: [values]}."""
        return self.model_dump(exclude_none=True)


class Selector(_OneKey):
    """Items named by exactly one of: code(s), category (any level or path, "Home > Kitchen"), brand."""

    keys_hint: ClassVar[str] = "use " + " or ".join(SELECTOR_KEYS)

    code: Codes = None
    category: Texts = None
    brand: Texts = None


class PinItem(_OneKey):
    """The one item a pin places, by its code."""

    keys_hint: ClassVar[str] = "use code"

    code: Annotated[
        Codes,
        WithJsonSchema(
            {"anyOf": [_CODE_SCHEMA, {"type": "array", "items": _CODE_SCHEMA, "minItems": 1, "maxItems": 1}]}
        ),
    ]

    @model_validator(mode="after")
    def _single(self) -> PinItem:
        if len(self.code) != 1:
            raise _refuse(f"a pin places one code, got {len(self.code)}")
        return self


class Block(_Part):
    """Items never recommended, whatever the basket."""

    codes: OptionalCodes = Field(default_factory=list, description="stock codes")
    categories: OptionalTexts = Field(default_factory=list, description="categories: any level's name or a path")
    brands: OptionalTexts = Field(default_factory=list)


class DoNotPair(_Part):
    """When the basket holds an item the first selector names, the items the second names are not recommended."""

    basket: Selector
    item: Selector


class Pin(_Part):
    """When the basket holds an item the selector names, the item is placed at this position (1: first)."""

    basket: Selector
    item: PinItem
    position: Position = 1


class Boost(_Part):
    """The scores of the items the selector names are multiplied by factor (above 0)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 2, "maxProperties": 2})

    code: Codes = None
    category: Texts = None
    brand: Texts = None
    factor: Factor

    @classmethod
    def _check(cls, data: dict) -> None:
        _one_of(SELECTOR_KEYS, {k: v for k, v in data.items() if k != "factor"})

    def stored(self) -> dict:
        """core.feed_and_rules's boost entry: {key: [values], "factor": f}."""
        return self.model_dump(exclude_none=True)


class Bury(Boost):
    """The scores of the items the selector names are multiplied by factor (between 0 and 1)."""

    factor: BuryFactor


Entries = BeforeValidator(_entries)


class RulesFile(_Part):
    """Merchandising rules (make rules PATH_TO_RULES=file.yaml). Editors check a rules file as it is typed with
    this schema: save it (make rules_schema OUT=rules.schema.json) and put the line
    `# yaml-language-server: $schema=rules.schema.json` (a path relative to the YAML file, or a URL) at the top of
    the YAML file; VS Code's YAML extension, Neovim and others with yaml-language-server read it."""

    model_config = ConfigDict(title="Merchandising rules")

    block: Annotated[Block, BeforeValidator(lambda v: {} if v is None else v)] = Field(
        default_factory=Block, description="items never recommended: codes, categories, brands"
    )
    do_not_pair: Annotated[list[DoNotPair], Entries] = Field(
        default_factory=list, description="items not recommended with a basket holding certain items"
    )
    pin: Annotated[list[Pin], Entries] = Field(
        default_factory=list, description="an item placed at a position when the basket holds certain items"
    )
    boost: Annotated[list[Boost], Entries] = Field(
        default_factory=list, description="scores multiplied by a factor above 0 (above 1 raises)"
    )
    bury: Annotated[list[Bury], Entries] = Field(
        default_factory=list, description="scores multiplied by a factor between 0 and 1 (lowers)"
    )

    def stored(self) -> dict:
        """The stored form (core.feed_and_rules's rules.json); bury entries are boosts with a factor below 1."""
        return {
            "block": self.block.model_dump(),
            "do_not_pair": [{"basket": e.basket.stored(), "item": e.item.stored()} for e in self.do_not_pair],
            "pin": [
                {"basket": e.basket.stored(), "item": {"code": e.item.code}, "position": e.position} for e in self.pin
            ],
            "boost": [e.stored() for e in [*self.boost, *self.bury]],
        }


def json_schema() -> dict:
    """The JSON Schema of a rules file (draft 2020-12), for editors (yaml-language-server) and other tools."""
    schema = RulesFile.model_json_schema()
    for model in schema["$defs"].values():
        for prop in model.get("properties", {}).values():
            if prop.get("default", 0) is None:  # a selector key not given; null itself is refused
                del prop["default"]
    for name, prop in schema["properties"].items():  # "pin:" with nothing after it is no pins
        described = {k: prop.pop(k) for k in ("title", "description") if k in prop}
        schema["properties"][name] = {"anyOf": [prop, {"type": "null"}], **described}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _place(loc: tuple) -> str:
    """Where in the file: ("pin", 2, "position") is pin[2].position; () is the whole file, "rules"."""
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return where or "rules"


def validate(raw: object) -> dict:
    """The stored form (core.feed_and_rules's rules.json) of a YAML document; RulesError on the first problem."""
    try:
        return RulesFile.model_validate({} if raw is None else raw).stored()
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        raise RulesError(f"{_place(first['loc'])}: {first['msg']}") from None


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
    return [
        f"warning: {len(values)} {kind}(s) unknown to the current model and feed (rules kept for them): "
        f"{', '.join(values[:10])}{' ...' if len(values) > 10 else ''}"
        for kind, values in unknown.items()
        if values
    ]


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
        raw = yaml.load(data.decode("utf-8"), Loader=_Loader)  # noqa: S506 (a SafeLoader without aliases)
    except UnicodeDecodeError as err:
        raise RulesError(f"{path.name} is not UTF-8 text: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RulesError(f"{path.name} is not valid YAML{where}: {problem}") from None
    except RulesError as err:
        raise RulesError(f"{path.name}: {err.message}") from None
    try:
        return validate(raw), data
    except RulesError as err:
        raise RulesError(f"{path.name}: {err.message}") from None


def known_from(codes: list[str], feed_items: dict[str, dict]) -> Known:
    """What the current model (its codes) and feed (codes, categories, brands) know."""
    item_categories = {code: category_keys(a["category"]) for code, a in feed_items.items() if a.get("category")}
    item_brand = {code: brand_key(a["brand"]) for code, a in feed_items.items() if a.get("brand")}
    return Known(
        set(codes) | set(feed_items),
        {k for ks in item_categories.values() for k in ks},
        set(item_brand.values()),
        item_categories,
        item_brand,
    )


def describe(rules: dict) -> list[str]:
    """How many rules of each kind, for the console."""
    block = rules["block"]
    return [
        f"block: {len(block['codes'])} code(s), {len(block['categories'])} categor(ies), "
        f"{len(block['brands'])} brand(s); do_not_pair: {len(rules['do_not_pair'])}; pin: {len(rules['pin'])}; "
        f"boost/bury: {len(rules['boost'])}"
    ]


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
        warnings = check(rules, known)
    except RulesError as err:
        raise RulesError(f"{path.name}: {err.message}") from None
    stored = json.dumps(rules, ensure_ascii=False, sort_keys=True, indent=1).encode()
    if len(stored) > max_stored_bytes:
        raise RulesError(
            f"{path.name}: its rules take {len(stored):,} bytes once stored; at most {max_stored_bytes:,} are "
            "accepted (MAX_RULES_STORED_BYTES)"
        )
    for line in describe(rules) + warnings:
        progress(line)
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
    return [
        f"rules version {pointer.version} (created {manifest['created_at']}, from {manifest['source']['file']})",
        *describe(rules),
        *manifest.get("warnings", []),
        f"earlier versions (make rules_rollback): {', '.join(pointer.previous) or 'none'}",
        "---",
        source.rstrip("\n"),
    ]
