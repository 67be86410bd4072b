"""The product feed: reading a .csv, .csv.gz, .tsv or .xlsx of product attributes keyed by stock code (Google
Merchant Center column names), validating every row, and publishing it as a feed version (make feed)."""

from __future__ import annotations

import codecs
import gzip
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recommender.core import registry
from recommender.core.errors import DataFileError, NotFound
from recommender.core.feed_and_rules import AVAILABILITY, FEED_FILE
from recommender.core.items import ITEMS_FILE
from recommender.core.registry import sha256_file, utcnow
from recommender.core.storage import Storage
from recommender.training.ingest import _not_encoded, cell_text, clean_code, xlsx_rows

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


@dataclass(frozen=True)
class FeedLimits:
    """What a feed file may be (MAX_FEED_ROWS, MAX_FEED_BYTES: uncompressed), and the encoding of its text."""

    rows: int = 500_000
    bytes: int = 256 << 20
    encoding: str = "utf-8"


class _TooLarge(Exception):
    """Raised from inside the csv reader when the file goes over MAX_FEED_BYTES."""


class _Bounded:
    """A binary file that refuses to give more than `limit` bytes (a .gz can hold far more than its size)."""

    def __init__(self, raw: object, limit: int) -> None:
        self.raw, self.limit, self.read_bytes = raw, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size if size is not None and size >= 0 else self.limit + 1)
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise _TooLarge
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self.raw, name)

    def __iter__(self) -> Iterator[bytes]:
        for line in self.raw:
            self.read_bytes += len(line)
            if self.read_bytes > self.limit:
                raise _TooLarge
            yield line


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


def feed_kind(path: Path) -> str:
    """The file's kind from its name; DataFileError for anything unsupported."""
    name = path.name.lower()
    for suffix in sorted(SUPPORTED, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise DataFileError(
        f"unsupported feed file type {''.join(path.suffixes) or '(none)'} for {path.name}: use {', '.join(SUPPORTED)}"
    )


def _norm(name: object) -> str:
    return re.sub(r"[\s_]", "", str(name)).lower()


def _read_table(path: Path, limits: FeedLimits) -> tuple[list[str], list[list[str]]]:
    """Header and rows as text, whatever the format; DataFileError beyond the limits or for text not in the
    encoding (strict: never read into mangled text)."""
    kind = feed_kind(path)
    if not path.is_file():
        raise DataFileError(f"file not found: {path}" if not path.exists() else f"not a file: {path}")
    too_large = DataFileError(
        f"{path.name} is larger than {limits.bytes:,} bytes{' uncompressed' if kind.endswith('.gz') else ''}; "
        "a feed may hold at most MAX_FEED_BYTES (raise it, or leave out products no model will know)"
    )
    if kind == ".xlsx":
        if path.stat().st_size > limits.bytes:
            raise too_large
        rows = [[cell_text(c) for c in row] for row in xlsx_rows(path)]
        width = len(rows[0])
        return rows[0], [(row + [""] * width)[:width] for row in rows[1:]]
    try:
        codecs.lookup(limits.encoding)
    except LookupError:
        raise DataFileError(
            f"unknown encoding ENCODING={limits.encoding!r}: use e.g. utf-8, latin-1 or cp1252"
        ) from None
    sep = "\t" if kind.startswith(".tsv") else ","
    try:
        with gzip.open(path, "rb") if kind.endswith(".gz") else open(path, "rb") as raw:
            # Merchant Center's tab files use no quoting. One row more than the limit says whether it is over.
            frame = pd.read_csv(
                _Bounded(raw, limits.bytes),
                sep=sep,
                dtype=str,
                keep_default_na=False,
                encoding=limits.encoding,
                encoding_errors="strict",
                quoting=3 if sep == "\t" else 0,
                nrows=limits.rows + 1,
            )
    except _TooLarge:
        raise too_large from None
    except pd.errors.EmptyDataError:
        raise DataFileError(f"{path.name} is empty") from None
    except UnicodeDecodeError:
        raise _not_encoded(path, kind, limits.encoding) from None
    except (gzip.BadGzipFile, EOFError, OSError, pd.errors.ParserError, ValueError) as err:
        raise DataFileError(f"cannot read {path.name} as {kind}: {str(err).strip()}") from None
    return [str(c) for c in frame.columns], frame.to_numpy(dtype=object).tolist()


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


def read_feed(path: str | Path, limits: FeedLimits | None = None) -> FeedFile:
    """Read and validate a feed file; DataFileError with one line naming the first bad row (and how many more)."""
    path, limits = Path(path), limits or FeedLimits()
    header, rows = _read_table(path, limits)
    if len(rows) > limits.rows:
        raise DataFileError(
            f"{path.name} has more than {limits.rows:,} products; a feed may hold at most MAX_FEED_ROWS "
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
                f"{path.name} does not look {'tab' if feed_kind(path).startswith('.tsv') else 'comma'}"
                f"-separated (header {header[0]!r})"
            )
        raise DataFileError(f"{path.name} lacks a StockCode (or id) column; found: {shown}")
    if not rows:
        raise DataFileError(f"{path.name} has a header but no rows")
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
            for name in ("category", "brand", "title", "description", "image_link", "link"):
                if cell(name):
                    attributes[name] = cell(name)
        except ValueError as err:
            errors.append(f"line {number}: {err}")
            continue
        first_line[code] = number
        items[code] = attributes
    if errors:
        more = f" (and {len(errors) - 1} more bad line(s))" if len(errors) > 1 else ""
        raise DataFileError(f"{path.name} {errors[0]}{more}; nothing was uploaded")
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


def publish_feed(
    storage: Storage,
    path: str | Path,
    keep_versions: int = 5,
    progress: Callable[[str], None] = print,
    now: Callable = utcnow,
    known_codes: set[str] | None = None,
    limits: FeedLimits | None = None,
) -> dict:
    """Validate a feed file, store it as a new feed version, activate it and prune old ones; returns the manifest."""
    path = Path(path)
    feed = read_feed(path, limits)
    for line in describe(feed, known_codes):
        progress(line)
    info = {
        "source": {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size},
        "counts": {"rows": feed.rows, "items": len(feed.items)},
    }
    manifest = registry.publish_files(storage, {FEED_FILE: feed.to_json()}, info, registry.FEED, now)
    registry.activate(storage, manifest["version"], now, kind=registry.FEED)
    registry.prune(storage, keep_versions, now=now, kind=registry.FEED)
    progress(f"activated feed version {manifest['version']} (serving processes pick it up within MODEL_POLL_SECONDS)")
    return manifest


@dataclass(frozen=True)
class ActiveModel:
    """The active model's codes, descriptions, popularity and default prices (for warnings and feed_show)."""

    version: str
    codes: list[str]
    descriptions: list[str]
    popularity: list[int]
    prices: np.ndarray | None


def active_model(storage: Storage) -> ActiveModel | None:
    """What the active model knows, or None before the first training."""
    pointer = registry.active(storage)
    if pointer is None:
        return None
    raw = json.loads(storage.read(registry.artifact_key(pointer.version, ITEMS_FILE)))
    manifest = registry.read_manifest(storage, pointer.version)
    prices = None
    if "item_price.npy" in manifest["artifacts"]:
        prices = np.load(storage.local_copy(registry.artifact_key(pointer.version, "item_price.npy")))
    return ActiveModel(pointer.version, raw["codes"], raw["descriptions"], raw["popularity"], prices)


def active_feed(storage: Storage) -> tuple[str | None, dict[str, dict]]:
    """The active feed version and its items ({} without a feed)."""
    pointer = registry.active(storage, registry.FEED)
    if pointer is None:
        return None, {}
    data = registry.read_verified(storage, pointer.version, FEED_FILE, registry.FEED)
    return pointer.version, json.loads(data)["items"]


def show(storage: Storage, code: str | None) -> list[str]:
    """What feed_show prints: the active feed (version, source, counts, history), or everything known of one
    code (the model's description, the feed's attributes, the price answers use, whether it can be recommended)."""
    pointer = registry.active(storage, registry.FEED)
    version, items = active_feed(storage)
    if code is None:
        if pointer is None:
            return [
                f"no product feed in {storage.url}: every item counts as in stock, priced from the training file "
                "(make feed PATH_TO_FEED=<file> uploads one)"
            ]
        manifest = registry.read_manifest(storage, pointer.version, registry.FEED)
        availability = Counter(a.get("availability", "in_stock") for a in items.values())
        return [
            f"feed version {version} (created {manifest['created_at']}, from {manifest['source']['file']})",
            f"{len(items):,} products; " + ", ".join(f"{n:,} {k}" for k, n in sorted(availability.items())),
            f"earlier versions (make feed_rollback): {', '.join(pointer.previous) or 'none'}",
        ]
    model = active_model(storage)
    attributes = items.get(code)
    row = model.codes.index(code) if model and code in model.codes else None
    if row is None and attributes is None:
        raise NotFound(f"{code} is neither in the active model nor in the feed")
    lines = [code + (f"  {model.descriptions[row]}" if row is not None else "")]
    lines.append(
        f"  model {model.version}: "
        + (
            f"in {model.popularity[row]:,} training baskets"
            if row is not None
            else "unknown: a new product, recommended by the known products its feed row resembles"
        )
        if model
        else "  no model yet"
    )
    lines.append(
        f"  feed {version}: "
        + (
            ", ".join(f"{k} {v}" for k, v in sorted(attributes.items())) or "listed"
            if attributes is not None
            else "not listed (defaults: in stock, no category)"
        )
        if version
        else "  no feed (defaults: in stock, no category)"
    )
    trained = model.prices[row] if model is not None and row is not None and model.prices is not None else np.nan
    if attributes and "price" in attributes:
        currency = f" {attributes['currency']}" if attributes.get("currency") else ""
        lines.append(f"  price used: {attributes['price']:g}{currency} (feed)")
    elif trained == trained:
        lines.append(f"  price used: {trained:g} (most recent UnitPrice in the training file)")
    else:
        lines.append("  price used: unknown (price filters leave it out)")
    out = (attributes or {}).get("availability") == "out_of_stock"
    lines.append("  recommended: " + ("no, out of stock" if out else "yes, unless rules or request filters say no"))
    return lines
