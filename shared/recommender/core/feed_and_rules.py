"""What the product feed and the merchandising rules look like once stored (written by the upload commands, read
by every serving process): names shared by both sides, and how categories are compared.

feed.json:  {"items": {stock_code: {"availability", "price", "currency", "category", "brand", "title",
             "image_link", "link"}}}, each attribute present only when the feed gives it.
rules.json: {"block": {"codes": [...], "categories": [...], "brands": [...]},
             "do_not_pair": [{"basket": selector, "item": selector}],
             "pin": [{"basket": selector, "item": {"code": c}, "position": k}],
             "boost": [{**selector, "factor": f}]}      (bury entries are stored as boosts with their factor < 1)
A selector is {"code": [...]} or {"category": [...]} or {"brand": [...]} (one key, a list of values).
"""

from __future__ import annotations

import re

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
