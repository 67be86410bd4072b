"""Merchandising rules as a document (block, do_not_pair, pin, boost, bury, each entry in force from an optional
start to an optional end): the pydantic models of the rules file, their validation with one message naming the
place and the problem, the checks against what the model and feed know, which entries are in force at a time, and
publishing a validated document as a rules version. Shared by `make rules` (training/rules.py reads the YAML file)
and the console's rules routes (serving), which may not import yaml or training code."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from recommender.core import registry
from recommender.core.errors import DataFileError
from recommender.core.feed_and_rules import (  # noqa: F401 (in_force: re-exported)
    MAX_RULE_FACTOR,
    MIN_RULE_FACTOR,
    RULES_FILE,
    RULES_SOURCE,
    SELECTOR_KEYS,
    brand_key,
    category_key,
    category_keys,
    in_force,
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


def _moment(value: Any) -> str:
    """A start or end time as stored: ISO 8601 in UTC ("2026-12-05T18:00:00Z"); a date alone is its midnight, a
    time without an offset is UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _refuse(f"expected a date or time such as 2026-12-05 or 2026-12-05T18:00, got {value!r}") from None
    else:
        raise _refuse(f"expected a date or time such as 2026-12-05 or 2026-12-05T18:00, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
Moment = Annotated[
    str | None,
    BeforeValidator(_moment),
    WithJsonSchema({"type": "string", "description": "a date or time: 2026-12-05, 2026-12-05T18:00 (UTC), ...Z"}),
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


class _Windowed(_Part):
    """An entry in force from start (included) to end (excluded), each optional."""

    start: Moment = None
    end: Moment = None

    @model_validator(mode="after")
    def _order(self) -> _Windowed:
        if self.start and self.end and self.end <= self.start:
            raise _refuse(f"the end ({self.end}) must come after the start ({self.start})")
        return self

    def window(self) -> dict:
        """The stored form's start and end, those given."""
        return {k: v for k, v in (("start", self.start), ("end", self.end)) if v}


class DoNotPair(_Windowed):
    """When the basket holds an item the first selector names, the items the second names are not recommended."""

    basket: Selector
    item: Selector


class Pin(_Windowed):
    """When the basket holds an item the selector names, the item is placed at this position (1: first)."""

    basket: Selector
    item: PinItem
    position: Position = 1


class Boost(_Windowed):
    """The scores of the items the selector names are multiplied by factor (above 0)."""

    # Exactly one selector key, with factor and an optional start and end.
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": [k]} for k in SELECTOR_KEYS]})

    code: Codes = None
    category: Texts = None
    brand: Texts = None
    factor: Factor

    @classmethod
    def _check(cls, data: dict) -> None:
        _one_of(SELECTOR_KEYS, {k: v for k, v in data.items() if k not in ("factor", "start", "end")})

    def stored(self) -> dict:
        """core.feed_and_rules's boost entry: {key: [values], "factor": f} (and its start and end, if given)."""
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
            "do_not_pair": [
                {"basket": e.basket.stored(), "item": e.item.stored(), **e.window()} for e in self.do_not_pair
            ],
            "pin": [
                {"basket": e.basket.stored(), "item": {"code": e.item.code}, "position": e.position, **e.window()}
                for e in self.pin
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


def publish(
    storage: Storage,
    rules: dict,
    source: bytes,
    file_name: str,
    known: Known,
    keep_versions: int = 5,
    progress: Callable[[str], None] = print,
    now: Callable = utcnow,
    max_stored_bytes: int = MAX_RULES_STORED_BYTES,
) -> dict:
    """Store validated rules (validate's stored form) and the document they came from as a new rules version,
    activate it and prune old ones; RulesError when the checks against the model and feed refuse them."""
    warnings = check(rules, known)
    stored = json.dumps(rules, ensure_ascii=False, sort_keys=True, indent=1).encode()
    if len(stored) > max_stored_bytes:
        raise RulesError(
            f"its rules take {len(stored):,} bytes once stored; at most {max_stored_bytes:,} are "
            "accepted (MAX_RULES_STORED_BYTES)"
        )
    for line in describe(rules) + warnings:
        progress(line)
    info = {"source": {"file": file_name, "bytes": len(source)}, "warnings": warnings}
    manifest = registry.publish_files(storage, {RULES_FILE: stored, RULES_SOURCE: source}, info, registry.RULES, now)
    registry.activate(storage, manifest["version"], now, kind=registry.RULES)
    registry.prune(storage, keep_versions, now=now, kind=registry.RULES)
    progress(f"activated rules version {manifest['version']} (serving processes pick it up within MODEL_POLL_SECONDS)")
    return manifest
