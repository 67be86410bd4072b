"""The product feed: reading a .csv, .csv.gz, .tsv or .xlsx of product attributes keyed by stock code (Google
Merchant Center column names), validating every row, and publishing it as a feed version (make feed)."""

from __future__ import annotations

import codecs
import gzip
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recommender.core import registry
from recommender.core.errors import DataFileError, NotFound
from recommender.core.feed_and_rules import FEED_FILE
from recommender.core.feed_form import (  # noqa: F401 (re-exported: make feed and its tests name them here)
    COLUMNS,
    MAX_PRICE,
    NO,
    PRICE,
    SUPPORTED,
    YES,
    FeedFile,
    FeedLimits,
    describe,
    parse_availability,
    parse_price,
    publish,
    validate_table,
)
from recommender.core.items import ITEMS_FILE
from recommender.core.registry import sha256_file, utcnow
from recommender.core.storage import Storage
from recommender.training.ingest import _not_encoded, cell_text, xlsx_rows

# Each attribute and the headers naming it, compared without case, spaces or underscores.


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


def feed_kind(path: Path) -> str:
    """The file's kind from its name; DataFileError for anything unsupported."""
    name = path.name.lower()
    for suffix in sorted(SUPPORTED, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise DataFileError(
        f"unsupported feed file type {''.join(path.suffixes) or '(none)'} for {path.name}: use {', '.join(SUPPORTED)}"
    )


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


def read_feed(path: str | Path, limits: FeedLimits | None = None) -> FeedFile:
    """Read and validate a feed file; DataFileError with one line naming the first bad row (and how many more)."""
    path, limits = Path(path), limits or FeedLimits()
    header, rows = _read_table(path, limits)
    return validate_table(path.name, feed_kind(path), header, rows, limits)


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
    source = {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    return publish(storage, feed, source, keep_versions, progress, now, known_codes)


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
