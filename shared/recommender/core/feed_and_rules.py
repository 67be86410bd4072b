"""What the product feed and the merchandising rules look like once stored (written by the upload commands, read
by every serving process): names shared by both sides, and how categories are compared.

feed.json:  {"items": {stock_code: {"availability", "price", "currency", "category", "brand", "title",
             "image_link", "link"}}}, each attribute present only when the feed gives it.
rules.json: {"block": {"codes": [...], "categories": [...], "brands": [...]},
             "do_not_pair": [{"basket": selector, "item": selector}],
             "pin": [{"basket": selector, "item": {"code": c}, "position": k}],
             "boost": [{**selector, "factor": f}]}      (bury entries are stored as boosts with their factor < 1)
do_not_pair, pin and boost entries may carry "start" and "end" (ISO 8601 UTC, "2026-12-05T18:00:00Z"): in force
from start (included) to end (excluded).
A selector is {"code": [...]} or {"category": [...]} or {"brand": [...]} (one key, a list of values).
"""

from __future__ import annotations

import json
import re
from collections.abc import Container
from datetime import UTC, datetime

FEED_FILE = "feed.json"
RULES_FILE = "rules.json"
RULES_SOURCE = "rules.yaml"
AVAILABILITY = ("in_stock", "out_of_stock", "preorder", "backorder")
# What an item the feed does not list, or lists without availability, is.
DEFAULT_AVAILABILITY = "in_stock"
# Feed attributes an answer shows when they are known (price also comes from the training file); the HTTP answers
# declare them (serving/schemas.py, ItemOut) and show no other.
SHOWN = ("price", "currency", "category", "availability", "brand", "title", "image_link", "link")
SELECTOR_KEYS = ("code", "category", "brand")
# A boost or bury factor is from MIN_RULE_FACTOR to MAX_RULE_FACTOR (a rules file is refused otherwise); the
# factors applying to one item multiply, and serving holds the product from MIN_TOTAL_FACTOR to MAX_TOTAL_FACTOR,
# so that however rules stack (or a rules.json stored by hand says), every score stays a finite number.
MIN_RULE_FACTOR, MAX_RULE_FACTOR = 0.001, 1000.0
MIN_TOTAL_FACTOR, MAX_TOTAL_FACTOR = 1e-6, 1e6

_SPACES = re.compile(r"\s+")


def category_key(name: str) -> str:
    """How categories compare: without case, with runs of spaces made one and spaces around ">" removed."""
    return ">".join(_SPACES.sub(" ", part).strip() for part in name.casefold().split(">"))


def category_keys(path: str) -> list[str]:
    """The categories an item with this category path belongs to: every level's own name and every leading path
    ("Home > Kitchen > Mugs": home, kitchen, mugs, home>kitchen, home>kitchen>mugs), so a rule or a filter may
    name a level or a path."""
    levels = [part for part in category_key(path).split(">") if part]
    keys = list(dict.fromkeys(levels))
    keys.extend(">".join(levels[:i]) for i in range(2, len(levels) + 1))
    return keys


def brand_key(name: str) -> str:
    """How brands compare: without case or surrounding spaces."""
    return _SPACES.sub(" ", name.casefold()).strip()


_SPACE = re.compile(r"[ \t\n\r]*")
_ITEMS_START = re.compile(r'[ \t\n\r]*\{[ \t\n\r]*"items"[ \t\n\r]*:[ \t\n\r]*\{')


def feed_items(data: bytes, keep: Container[str] | None = None) -> tuple[dict[str, dict], int]:
    """A stored feed's items (only the codes in keep, when given) and how many others it lists. Read one item at a
    time: one json.loads of a large feed holds the interpreter lock for its whole length (half a second for
    500,000 items), and every request of the process would wait that long; this lets them through between items.
    ValueError when it is not a feed.json."""
    text = data.decode("utf-8")
    start = _ITEMS_START.match(text)
    if start is None:  # another layout than the one written (keys reordered by hand, say): read it whole
        items = json.loads(text)["items"]
        kept = {code: a for code, a in items.items() if keep is None or code in keep}
        return kept, len(items) - len(kept)
    decode = json.JSONDecoder().raw_decode
    kept, others = {}, 0
    pos = _SPACE.match(text, start.end()).end()
    if text.startswith("}", pos):
        return kept, others
    while True:
        code, pos = decode(text, pos)
        pos = _SPACE.match(text, pos).end()
        if not text.startswith(":", pos):
            raise ValueError(f"expected ':' at character {pos}")
        attributes, pos = decode(text, _SPACE.match(text, pos + 1).end())
        if keep is None or code in keep:
            kept[code] = attributes
        else:
            others += 1
        pos = _SPACE.match(text, pos).end()
        if text.startswith(",", pos):
            pos = _SPACE.match(text, pos + 1).end()
        elif text.startswith("}", pos):
            return kept, others
        else:
            raise ValueError(f"expected ',' or '}}' at character {pos}")


WINDOWED = ("do_not_pair", "pin", "boost")


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _on(entry: dict, stamp: str) -> bool:
    return entry.get("start", stamp) <= stamp and (entry.get("end") is None or stamp < entry["end"])


def in_force(rules: dict, at: datetime) -> dict:
    """The rules with only the entries in force at a time (no start, or start <= at; no end, or at < end)."""
    stamp = _stamp(at)
    return {**rules, **{kind: [e for e in rules.get(kind, []) if _on(e, stamp)] for kind in WINDOWED}}


def in_force_key(rules: dict, at: datetime) -> tuple[bool, ...]:
    """Which timed entries are in force at a time: the view of the rules changes when this does."""
    stamp = _stamp(at)
    return tuple(_on(e, stamp) for kind in WINDOWED for e in rules.get(kind, []) if "start" in e or "end" in e)


def windows(rules: dict) -> list[str]:
    """Every start and end time the rules name, sorted (when what is in force can change)."""
    return sorted({e[k] for kind in WINDOWED for e in rules.get(kind, []) for k in ("start", "end") if k in e})
