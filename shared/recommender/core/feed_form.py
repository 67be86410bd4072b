"""The product feed as a table (header and rows of text, however the file was read): its columns, the checks
of every row, the validated FeedFile, what it changes against the feed in force, and publishing it as a feed
version. Shared by `make feed` (training/feed.py reads .csv, .tsv, .xlsx with pandas and openpyxl) and the console's
feed upload (serving/feed_upload.py reads .csv and .tsv with the standard library)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from recommender.core import registry
from recommender.core.errors import DataFileError
from recommender.core.feed_and_rules import AVAILABILITY, DEFAULT_AVAILABILITY, FEED_FILE
from recommender.core.registry import utcnow
from recommender.core.storage import Storage

SUPPORTED = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".xlsx")
# Each attribute and the headers naming it, compared without case, spaces or underscores.
COLUMNS = {
    "stock_code": ("stockcode", "id", "itemid", "offerid", "sku"),
    "availability": ("availability",),
    "price": ("price",),
    "category": ("category", "producttype"),
    "brand": ("brand",),
    "title": ("title",),
    "description": ("description",),  # with the title, what places a product the model never saw
    "image_link": ("imagelink",),
    "link": ("link",),
}
YES = {"true", "1", "yes", "y", "instock", "available"}
NO = {"false", "0", "no", "n", "outofstock"}
PRICE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]{3})?\s*$")
# The highest price accepted: anything above is a typo or a broken export, and a number that large (or infinite)
# would break price filters and ratios.
MAX_PRICE = 1e9
MAX_ERRORS_SHOWN = 1
FLOAT_INTEGER = re.compile(r"^(\d+)\.0+$")


def clean_code(value: str) -> str:
    """A stock code as the file means it: trimmed, and "85123.0" (a spreadsheet's number) -> "85123"."""
    value = value.strip()
    match = FLOAT_INTEGER.match(value)
    return match.group(1) if match else value


@dataclass(frozen=True)
class FeedLimits:
    """What a feed file may be (MAX_FEED_ROWS, MAX_FEED_BYTES: uncompressed), and the encoding of its text."""

    rows: int = 500_000
    bytes: int = 256 << 20
    encoding: str = "utf-8"


@dataclass
class FeedFile:
    """A validated feed: attributes per stock code (only those given), and what the file held."""

    items: dict[str, dict]
    rows: int
    columns: list[str]
    currencies: Counter = field(default_factory=Counter)

    def to_json(self) -> bytes:
        """The stored form (core.feed_and_rules's feed.json)."""
        return json.dumps({"items": self.items}, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _norm(name: object) -> str:
    return re.sub(r"[\s_]", "", str(name)).lower()


def parse_availability(value: str) -> str | None:
    """One of AVAILABILITY (None for an empty cell); ValueError naming the accepted values otherwise."""
    key = re.sub(r"[\s_-]", "", value).lower()
    if not key:
        return None
    for name in AVAILABILITY:
        if key == name.replace("_", ""):
            return name
    if key in YES:
        return "in_stock"
    if key in NO:
        return "out_of_stock"
    raise ValueError(f"availability {value!r} is not one of {', '.join(AVAILABILITY)}, true/false, 1/0, yes/no")


def parse_price(value: str) -> tuple[float, str | None] | None:
    """(amount, currency or None) from "12.50" or "12.50 GBP" (None for an empty cell); ValueError otherwise."""
    if not value.strip():
        return None
    match = PRICE.match(value)
    shown = value if len(value) <= 30 else value[:30] + "..."
    if not match:
        raise ValueError(f"price {shown!r} is not a number, optionally followed by a currency code (12.50 GBP)")
    amount = float(match.group(1))
    if not math.isfinite(amount) or amount > MAX_PRICE:
        raise ValueError(f"price {shown!r} is above {MAX_PRICE:,.0f}, the highest price accepted")
    return amount, match.group(2).upper() if match.group(2) else None


def validate_table(name: str, kind: str, header: list[str], rows: list[list], limits: FeedLimits) -> FeedFile:
    """The validated feed of a table read from file name (of kind .csv, .tsv, ...); DataFileError with one line
    naming the first bad row (and how many more)."""
    if len(rows) > limits.rows:
        raise DataFileError(
            f"{name} has more than {limits.rows:,} products; a feed may hold at most MAX_FEED_ROWS "
            "(raise it, or leave out products no model will know)"
        )
    found: dict[str, int] = {}
    for attribute, names in COLUMNS.items():
        for j, column in enumerate(header):
            if _norm(column) in names and attribute not in found:
                found[attribute] = j
    if "stock_code" not in found:
        shown = ", ".join(str(c).strip() for c in header) or "none"
        if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
            raise DataFileError(
                f"{name} does not look {'tab' if kind.startswith('.tsv') else 'comma'}-separated (header {header[0]!r})"
            )
        raise DataFileError(f"{name} lacks a StockCode (or id) column; found: {shown}")
    if not rows:
        raise DataFileError(f"{name} has a header but no rows")
    items: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    currencies: Counter = Counter()
    errors: list[str] = []
    for number, row in enumerate(rows, start=2):  # the header is line 1

        def cell(attribute: str) -> str:
            j = found.get(attribute)
            return "" if j is None else str(row[j] if row[j] is not None else "").strip()  # noqa: B023 (used in this iteration)

        code = clean_code(cell("stock_code"))
        try:
            if not code:
                raise ValueError("the stock code is empty")
            if code in first_line:
                raise ValueError(f"stock code {code} is listed twice (first on line {first_line[code]})")
            attributes: dict = {}
            availability = parse_availability(cell("availability"))
            if availability:
                attributes["availability"] = availability
            price = parse_price(cell("price"))
            if price:
                attributes["price"] = price[0]
                if price[1]:
                    attributes["currency"] = price[1]
                    currencies[price[1]] += 1
            for attribute in ("category", "brand", "title", "description", "image_link", "link"):
                if cell(attribute):
                    attributes[attribute] = cell(attribute)
        except ValueError as err:
            errors.append(f"line {number}: {err}")
            continue
        first_line[code] = number
        items[code] = attributes
    if errors:
        more = f" (and {len(errors) - 1} more bad line(s))" if len(errors) > 1 else ""
        raise DataFileError(f"{name} {errors[0]}{more}; nothing was uploaded")
    return FeedFile(items, len(rows), [header[j] for j in sorted(found.values())], currencies)


def describe(feed: FeedFile, known_codes: set[str] | None) -> list[str]:
    """What a feed holds, as lines for the console; with the current model's codes, which ones it does not know."""
    availability = Counter(a.get("availability", "in_stock (default)") for a in feed.items.values())
    lines = [
        f"{len(feed.items):,} products, columns: {', '.join(feed.columns)}",
        "availability: " + ", ".join(f"{n:,} {name}" for name, n in sorted(availability.items())),
        f"with a price: {sum('price' in a for a in feed.items.values()):,} (the others keep the training "
        f"file's most recent UnitPrice); with a category: {sum('category' in a for a in feed.items.values()):,}",
    ]
    if len(feed.currencies) > 1:
        lines.append(
            f"warning: prices in {len(feed.currencies)} currencies ({', '.join(sorted(feed.currencies))}); "
            "price filters and ratios compare the numbers as they are"
        )
    if known_codes is not None:
        unknown = sorted(set(feed.items) - known_codes)
        if unknown:
            lines.append(
                f"{len(unknown):,} code(s) not in the current model: recommended as new products, by the known "
                f"products their title, description, category, brand and price resemble (codes with none of "
                f"these are left out until a model knows them): {', '.join(unknown[:10])}"
                f"{' ...' if len(unknown) > 10 else ''}"
            )
    return lines


def publish(
    storage: Storage,
    feed: FeedFile,
    source: dict,
    keep_versions: int = 5,
    progress: Callable[[str], None] = print,
    now: Callable = utcnow,
    known_codes: set[str] | None = None,
) -> dict:
    """Store a validated feed as a new feed version (source: what it was read from), activate it and prune old
    ones; returns the manifest."""
    for line in describe(feed, known_codes):
        progress(line)
    info = {"source": source, "counts": {"rows": feed.rows, "items": len(feed.items)}}
    manifest = registry.publish_files(storage, {FEED_FILE: feed.to_json()}, info, registry.FEED, now)
    registry.activate(storage, manifest["version"], now, kind=registry.FEED)
    registry.prune(storage, keep_versions, now=now, kind=registry.FEED)
    progress(f"activated feed version {manifest['version']} (serving processes pick it up within MODEL_POLL_SECONDS)")
    return manifest


PRICE_CHANGE = 0.20  # a price change above this share is listed among a feed's changes
SHOWN_CODES = 20  # codes listed per kind of change (the counts are whole)


def changes(current: dict[str, dict], feed: FeedFile, known_codes: set[str] | None) -> dict:
    """What a feed changes against the one in force: products added, removed, newly out of stock, with a price
    changed by more than 20%, and unknown to the model; each a count and the first codes."""
    new = feed.items
    out = {code for code, a in new.items() if a.get("availability") == "out_of_stock"}
    was_out = {code for code, a in current.items() if a.get("availability") == "out_of_stock"}
    prices = []
    for code, attributes in new.items():
        before, after = current.get(code, {}).get("price"), attributes.get("price")
        if isinstance(before, int | float) and isinstance(after, int | float) and before > 0:
            if abs(after - before) / before > PRICE_CHANGE:
                prices.append({"stock_code": code, "before": before, "after": after})
    kinds = {
        "added": sorted(set(new) - set(current)),
        "removed": sorted(set(current) - set(new)),
        "out_of_stock": sorted(out - was_out),
        "back_in_stock": sorted(
            c for c in was_out & set(new) if new[c].get("availability", DEFAULT_AVAILABILITY) != "out_of_stock"
        ),
        "unknown_to_model": sorted(set(new) - known_codes) if known_codes is not None else [],
    }
    summary = {k: {"count": len(v), "codes": v[:SHOWN_CODES]} for k, v in kinds.items()}
    prices.sort(key=lambda p: p["stock_code"])
    summary["price_changes"] = {"count": len(prices), "items": prices[:SHOWN_CODES]}
    summary["products"] = len(new)
    return summary
