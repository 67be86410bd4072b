"""The event log as DuckDB tables: raw segments (JSON lines, as core.event_log writes them) and compacted Parquet.

Layout, under the storage (STORAGE_URL):
    events/raw/date=YYYY-MM-DD/hour=HH/<host>-<pid>-<ms>-<n>.jsonl  on local disk: appended by each serving
                                                               process, rolled at the hour
    events/raw/date=YYYY-MM-DD/hour=HH/<unixms>-<uuid>.jsonl  on S3: one immutable object per accepted batch (and
                                                               Firehose's objects, when it is turned on)
    events/parquet/date=YYYY-MM-DD/events.parquet             compacted (training/event_compaction.py): one file
                                                               per day of receipt, one row per item of each event

One row per item (LINE_COLUMNS) rather than a nested list of items: every query, the report's and Athena's alike,
is then plain SQL without UNNEST (whose forms differ between DuckDB and Athena), and a purchase's rows are already
the InvoiceNo / StockCode lines training reads. An event without items has one row, its item columns null.

DuckDB reads the files where they lie on local disk; from S3 they are first downloaded (boto3, through the
storage, several at a time) into a temporary folder laid out the same way: DuckDB's httpfs extension is a download
of its own, which a machine without internet (or a Lambda) cannot make.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from recommender.core.errors import DataFileError
from recommender.core.event_log import RAW_PREFIX
from recommender.core.storage import LocalStorage, Storage

RAW = RAW_PREFIX  # core.event_log writes there
PARQUET = "events/parquet/"
DAY_FILE = "events.parquet"
RAW_KEY = re.compile(r"^events/raw/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/[^/]+\.jsonl$")
PARQUET_KEY = re.compile(r"^events/parquet/date=(\d{4}-\d{2}-\d{2})/[^/]+\.parquet$")
# The model version and arm a recommendation id names: serving.attribution's pattern, in SQL (a test holds the two
# to the same answers), so that the version is a column, not a parse in every query.
RECOMMENDATION_ID = r"^r1\.([0-9A-Za-z-]{1,64})\.([0-9A-Za-z_-]{1,32})\.([0-9]{10,15})\.([0-9a-f]{8})$"
# What a raw line holds (other keys are ignored, missing ones read as null).
RAW_COLUMNS = {
    "event_id": "VARCHAR",
    "type": "VARCHAR",
    "ts": "VARCHAR",
    "session_id": "VARCHAR",
    "user_id": "VARCHAR",
    "recommendation_id": "VARCHAR",
    "items": "STRUCT(stock_code VARCHAR, quantity DOUBLE, price DOUBLE)[]",
    "value": "DOUBLE",
    "currency": "VARCHAR",
    "received_at": "VARCHAR",
    "source": "VARCHAR",
}
# The Parquet files' columns, in order (docs/event-analytics.md shows the Athena table of the same).
LINE_COLUMNS = {
    "event_id": "VARCHAR",
    "type": "VARCHAR",
    "ts": "TIMESTAMP",  # UTC
    "session_id": "VARCHAR",
    "user_id": "VARCHAR",
    "recommendation_id": "VARCHAR",
    "model_version": "VARCHAR",
    "arm": "VARCHAR",
    "line": "INTEGER",  # the item's position in the event, from 1; null for an event without items
    "stock_code": "VARCHAR",
    "quantity": "DOUBLE",
    "price": "DOUBLE",
    "value": "DOUBLE",
    "currency": "VARCHAR",
    "received_at": "TIMESTAMP",  # UTC
    "source": "VARCHAR",
}
# Downloads from S3 at once: each raw object is small, so the time goes to round trips.
DOWNLOADS = 16


@dataclass(frozen=True)
class RawSegment:
    """One raw segment: its key, the day and hour of its partition."""

    key: str
    day: str
    hour: int

    def closed(self, now: datetime, grace: timedelta) -> bool:
        """Whether its hour is over (by grace): no writer appends to it any more."""
        start = datetime.fromisoformat(f"{self.day}T{self.hour:02d}:00:00+00:00")
        return now >= start + timedelta(hours=1) + grace


@dataclass(frozen=True)
class Listing:
    """The event log's files: raw segments and compacted day files."""

    raw: tuple[RawSegment, ...]
    days: dict[str, str]  # day -> key of its Parquet file
    ignored: tuple[str, ...]  # keys under events/ that are neither

    @property
    def empty(self) -> bool:
        return not self.raw and not self.days


def day_key(day: str) -> str:
    """The key of a day's Parquet file."""
    return f"{PARQUET}date={day}/{DAY_FILE}"


def list_log(storage: Storage) -> Listing:
    """Every segment and day file of the log, in key order."""
    raw, days, ignored = [], {}, []
    for key in storage.list(RAW):
        match = RAW_KEY.match(key)
        if match:
            raw.append(RawSegment(key, match.group(1), int(match.group(2))))
        else:
            ignored.append(key)
    for key in storage.list(PARQUET):
        match = PARQUET_KEY.match(key)
        if match and key == day_key(match.group(1)):
            days[match.group(1)] = key
        else:
            ignored.append(key)
    return Listing(tuple(raw), days, tuple(ignored))


class Staged:
    """Local paths of log files: the stored files themselves on local disk, downloads from S3 (kept in a temporary
    folder, under the same keys, until close)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.local = isinstance(storage, LocalStorage)
        self.folder = None if self.local else Path(tempfile.mkdtemp(prefix="recommender-events-"))

    def paths(self, keys: list[str]) -> list[str]:
        """A local path for each key (downloaded in parallel from S3)."""
        if self.local:
            return [str(self.storage.root / key) for key in keys]

        def fetch(key: str) -> str:
            target = self.folder / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.storage.read(key))
            return str(target)

        with ThreadPoolExecutor(DOWNLOADS) as pool:
            return list(pool.map(fetch, keys))

    def scratch(self, name: str) -> Path:
        """A path for a file written on the way (a day's new Parquet file)."""
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="recommender-events-"))
        return self.folder / name

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def staged(storage: Storage) -> Iterator[Staged]:
    """A Staged for the storage, its downloads removed afterwards."""
    stage = Staged(storage)
    try:
        yield stage
    finally:
        stage.close()


def connect() -> Any:
    """An in-memory DuckDB connection, in UTC."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    return con


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def load_raw(con: Any, paths: list[str], table: str = "raw_records") -> None:
    """The records of raw segments as table (one row per line; unreadable lines have a null event_id), with the
    file each came from and a hash of its content (the tie-break between copies received at the same moment)."""
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in RAW_COLUMNS.items()) + "}"
    if not paths:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT "
            + ", ".join(f"CAST(NULL AS {v}) AS {k}" for k, v in RAW_COLUMNS.items())
            + ", CAST(NULL AS VARCHAR) AS filename, CAST(NULL AS VARCHAR) AS record_hash WHERE false"
        )
        return
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT r.*, md5(CAST(r AS VARCHAR)) AS record_hash
        FROM read_json({_sql_list(paths)}, format = 'newline_delimited', columns = {columns},
                       ignore_errors = true, filename = true) AS r"""
    )


def load_lines(con: Any, paths: list[str], table: str = "old_lines") -> None:
    """The rows of compacted day files as table (with their day, from the path)."""
    if not paths:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT "
            + ", ".join(f"CAST(NULL AS {v}) AS {k}" for k, v in LINE_COLUMNS.items())
            + ", CAST(NULL AS VARCHAR) AS date WHERE false"
        )
        return
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT {", ".join(LINE_COLUMNS)}, CAST(date AS VARCHAR) AS date
        FROM read_parquet({_sql_list(paths)}, hive_partitioning = true, hive_types = {{'date': VARCHAR}})"""
    )


def new_lines_sql(raw: str = "raw_records", old: str = "old_lines") -> str:
    """SQL of the item rows of the raw records whose event_id is not in `old` yet, one record per event_id (the first
    received wins; between copies received at the same moment, the smallest content hash, so that every run picks
    the same one), in LINE_COLUMNS order."""
    return f"""
    WITH firsts AS (
        SELECT * FROM {raw} AS r
        WHERE event_id IS NOT NULL AND event_id <> ''
          AND NOT EXISTS (SELECT 1 FROM {old} AS o WHERE o.event_id = r.event_id)
        QUALIFY row_number() OVER (
            PARTITION BY event_id ORDER BY try_cast(received_at AS TIMESTAMPTZ) NULLS LAST, record_hash) = 1
    ),
    listed AS (
        SELECT *, CASE WHEN items IS NULL OR len(items) = 0
                       THEN [NULL::STRUCT(stock_code VARCHAR, quantity DOUBLE, price DOUBLE)] ELSE items END AS listed
        FROM firsts
    ),
    lines AS (
        SELECT *, unnest(listed) AS item, generate_subscripts(listed, 1) AS position FROM listed
    )
    SELECT
        event_id, type,
        CAST(try_cast(ts AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS TIMESTAMP) AS ts,
        session_id, user_id, recommendation_id,
        nullif(regexp_extract(recommendation_id, '{RECOMMENDATION_ID}', 1), '') AS model_version,
        nullif(nullif(regexp_extract(recommendation_id, '{RECOMMENDATION_ID}', 2), ''), '-') AS arm,
        CASE WHEN item IS NULL THEN NULL ELSE CAST(position AS INTEGER) END AS line,
        item.stock_code AS stock_code, item.quantity AS quantity, item.price AS price,
        value, currency,
        CAST(try_cast(received_at AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS TIMESTAMP) AS received_at,
        source
    FROM lines
    """


def merged_lines(con: Any, storage: Storage, listing: Listing, stage: Staged) -> None:
    """Table `lines`: every event of the log once (compacted days and raw segments not compacted yet), with its
    day; an event_id on several days (sent again after midnight) keeps its first day's record."""
    load_lines(con, stage.paths(sorted(listing.days.values())))
    load_raw(con, stage.paths([s.key for s in listing.raw]))
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE new_lines AS
        SELECT n.*, strftime(n.received_at, '%Y-%m-%d') AS date FROM ({new_lines_sql()}) AS n"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE lines AS
        WITH every AS (SELECT * FROM old_lines UNION ALL BY NAME SELECT * FROM new_lines),
        firsts AS (SELECT event_id, min(date) AS date FROM every GROUP BY event_id)
        SELECT every.* FROM every JOIN firsts ON every.event_id = firsts.event_id AND every.date = firsts.date"""
    )


# --- training from events -------------------------------------------------------------------------------------

EVENTS_PREFIX = "events:"
CHUNK_ROWS = 1_000_000


def is_events(text: str) -> bool:
    """Whether a training source names the event log (events: or events:<storage url>)."""
    return text.strip().startswith(EVENTS_PREFIX)


def split_sources(text: str) -> list[str]:
    """The inputs of PATH_TO_DATA: one file, folder or s3:// location, or several with the event log
    ("orders.csv,events:"); commas split only when one of the pieces is the event log."""
    pieces = [p.strip() for p in text.split(",")]
    if len(pieces) > 1 and any(is_events(p) for p in pieces):
        if not all(pieces):
            raise DataFileError(f"{text!r}: an empty input between commas")
        if sum(is_events(p) for p in pieces) > 1:
            raise DataFileError(f"{text!r} names the event log more than once")
        return pieces
    return [text]


def with_store(text: str, storage_url: str) -> str:
    """The sources with a bare `events:` naming the given storage's log."""
    pieces = split_sources(text)
    return ",".join(f"{EVENTS_PREFIX}{storage_url}" if p.strip() == EVENTS_PREFIX else p for p in pieces)


def open_log(spec: str) -> Storage:
    """The storage an events:<url> source names (the settings' S3 options apply)."""
    from dataclasses import replace

    from recommender.core.settings import get_settings
    from recommender.core.storage import open_storage

    url = spec.strip()[len(EVENTS_PREFIX) :] or get_settings().storage_url
    return open_storage(replace(get_settings(), storage_url=url))


def fingerprint(storage: Storage, listing: Listing) -> str:
    """A digest of what the log holds now: its keys, and each day file's content hash."""
    import hashlib

    digest = hashlib.sha256()
    for segment in listing.raw:
        digest.update(f"{segment.key}\n".encode())
    for key in sorted(listing.days.values()):
        digest.update(f"{key}\t{storage.sha256(key)}\n".encode())
    return digest.hexdigest()


def _descriptions(storage: Storage) -> dict[str, str]:
    """Each known item's description: the product feed's title, else the active model's description (read here
    from the stored files: training.feed's readers import what imports this module)."""
    import json

    from recommender.core import registry
    from recommender.core.errors import RecommenderError
    from recommender.core.feed_and_rules import FEED_FILE
    from recommender.core.items import ITEMS_FILE

    known: dict[str, str] = {}
    try:
        model = registry.active(storage)
        if model is not None:
            items = json.loads(storage.read(registry.artifact_key(model.version, ITEMS_FILE)))
            known.update((c, d) for c, d in zip(items["codes"], items["descriptions"]) if d)
        feed = registry.active(storage, registry.FEED)
        if feed is not None:
            data = registry.read_verified(storage, feed.version, FEED_FILE, registry.FEED)
            known.update((c, a["title"]) for c, a in json.loads(data)["items"].items() if a.get("title"))
    except (RecommenderError, ValueError, KeyError):
        pass  # descriptions are a nicety: training goes on with empty ones
    return known


def purchase_chunks(spec: str) -> Iterator[Any]:
    """The recorded purchases as training rows (pandas DataFrames of text columns named as ingest reads them): one
    basket per purchase event (InvoiceNo = "E" + event_id: an id starting with C would otherwise read as a
    cancelled invoice), its items the lines, CustomerID = user_id, Description from
    the product feed or the active model; DataFileError when the log holds no purchase."""
    storage = open_log(spec)
    listing = list_log(storage)
    if listing.empty:
        raise DataFileError(
            f"no events recorded yet in {storage.url}: POST /events (or the widget) records them; "
            "train from a file until then"
        )
    descriptions = _descriptions(storage)
    with staged(storage) as stage:
        con = connect()
        merged_lines(con, storage, listing, stage)
        counts = dict(con.execute("SELECT type, count(DISTINCT event_id) FROM lines GROUP BY type").fetchall())
        if not counts.get("purchase"):
            seen = ", ".join(f"{n:,} {t}" for t, n in sorted(counts.items())) or "none readable"
            raise DataFileError(
                f"no purchase events in {storage.url} to train from (events recorded: {seen}); "
                'purchases are recorded with recommender.track("purchase", ...) or POST /events'
            )
        result = con.execute(
            """SELECT 'E' || event_id AS InvoiceNo, stock_code AS StockCode, coalesce(user_id, '') AS CustomerID,
                   CAST(coalesce(quantity, 1) AS VARCHAR) AS Quantity,
                   coalesce(strftime(ts, '%Y-%m-%d %H:%M:%S'), '') AS InvoiceDate,
                   coalesce(CAST(price AS VARCHAR), '') AS UnitPrice
            FROM lines WHERE type = 'purchase' AND stock_code IS NOT NULL
            ORDER BY ts NULLS FIRST, event_id, line"""
        )
        while True:
            chunk = result.fetch_df_chunk(max(1, CHUNK_ROWS // 2048))
            if chunk is None or not len(chunk):
                break
            chunk["Description"] = [descriptions.get(code, "") for code in chunk["StockCode"]]
            yield chunk
