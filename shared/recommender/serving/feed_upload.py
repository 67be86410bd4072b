"""The console's Product feed page: a feed file uploaded from the browser (the formats and checks of `make feed`:
.csv, .tsv, gzipped or not, and .xlsx; core/feed_form.py), what it changes against the feed in force, then
publishing it as a feed version, and rolling back. Read with the standard library: serving never imports pandas,
openpyxl or calamine (a spreadsheet is read by serving/xlsx_reader.py)."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import zlib
from pathlib import PurePosixPath

from recommender.core import registry
from recommender.core.errors import Conflict, DataFileError
from recommender.core.feed_and_rules import FEED_FILE
from recommender.core.feed_form import SUPPORTED, FeedFile, FeedLimits, changes, describe, publish, validate_table
from recommender.core.items import ITEMS_FILE
from recommender.core.storage import Storage

UPLOADED = SUPPORTED  # what make feed reads


def kind_of(name: str) -> str:
    """The uploaded file's kind from its name; DataFileError for anything else, in make feed's words."""
    lower = name.lower()
    for suffix in sorted(UPLOADED, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    suffixes = "".join(PurePosixPath(name).suffixes) or "(none)"
    raise DataFileError(f"unsupported feed file type {suffixes} for {name}: use {', '.join(UPLOADED)}")


def read_upload(name: str, data: bytes, limits: FeedLimits) -> FeedFile:
    """The validated feed of an uploaded file's bytes; DataFileError with one line naming the first problem."""
    kind = kind_of(name)
    if kind == ".xlsx":
        from recommender.serving import xlsx_reader  # only a spreadsheet needs it

        table = xlsx_reader.read_rows(name, data, limits.bytes, limits.rows + 2)
        header, width = table[0], len(table[0])
        return validate_table(name, kind, header, [(row + [""] * width)[:width] for row in table[1:]], limits)
    if kind.endswith(".gz"):
        try:
            # At most one byte over the limit is inflated: a small .gz can hold gigabytes.
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            data = inflater.decompress(data, limits.bytes + 1)
        except zlib.error as err:
            raise DataFileError(f"cannot read {name} as {kind}: {err}") from None
    if len(data) > limits.bytes:
        raise DataFileError(f"{name} is larger than {limits.bytes:,} bytes; a feed may hold at most MAX_FEED_BYTES")
    try:
        codecs.lookup(limits.encoding)
        text = data.decode(limits.encoding)
    except LookupError:
        raise DataFileError(f"unknown encoding ENCODING={limits.encoding!r}") from None
    except UnicodeDecodeError as err:
        raise DataFileError(f"{name} is not {limits.encoding} text (byte {err.start:,}): save it as UTF-8") from None
    text = text.removeprefix("\ufeff")
    tab = kind.startswith(".tsv")
    # Merchant Center's tab files use no quoting, as make feed reads them.
    reader = csv.reader(io.StringIO(text), delimiter="\t" if tab else ",", quoting=csv.QUOTE_NONE if tab else 0)
    try:
        table = [row for row in reader if row]
    except csv.Error as err:
        raise DataFileError(f"cannot read {name} as {kind}: {err}") from None
    if not table:
        raise DataFileError(f"{name} is empty")
    header, width = table[0], len(table[0])
    rows = [(row + [""] * width)[:width] for row in table[1 : limits.rows + 2]]
    return validate_table(name, kind, header, rows, limits)


def _current(storage: Storage) -> tuple[str | None, dict[str, dict]]:
    pointer = registry.active(storage, registry.FEED)
    if pointer is None:
        return None, {}
    return pointer.version, json.loads(registry.read_verified(storage, pointer.version, FEED_FILE, registry.FEED))[
        "items"
    ]


def _known_codes(storage: Storage) -> set[str] | None:
    pointer = registry.active(storage)
    if pointer is None:
        return None
    return set(json.loads(registry.read_verified(storage, pointer.version, ITEMS_FILE, registry.MODELS))["codes"])


def summary(storage: Storage, name: str, data: bytes, limits: FeedLimits) -> dict:
    """What an uploaded feed holds and changes against the feed in force, before anything is stored."""
    feed = read_upload(name, data, limits)
    version, current = _current(storage)
    known = _known_codes(storage)
    return {
        "file": name,
        "current_version": version,
        "lines": describe(feed, known),
        "changes": changes(current, feed, known),
    }


def publish_upload(storage: Storage, name: str, data: bytes, limits: FeedLimits, keep_versions: int) -> dict:
    """Publish an uploaded feed as `make feed` publishes a file: validated in full, a new version, activated."""
    feed = read_upload(name, data, limits)
    source = {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    lines: list[str] = []
    manifest = publish(storage, feed, source, keep_versions, lines.append, known_codes=_known_codes(storage))
    return {"version": manifest["version"], "summary": describe(feed, None)}


def roll_back(storage: Storage) -> dict:
    """Re-activate the feed version active before the current one (as make feed_rollback); Conflict without one."""
    pointer = registry.active(storage, registry.FEED)
    if pointer is None or not pointer.previous:
        raise Conflict("there is no earlier feed version to roll back to")
    return {"version": registry.rollback(storage, registry.FEED, notify=lambda _message: None)}
