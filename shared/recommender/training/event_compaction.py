"""Compaction of the event log (make events_compact): raw segments into one Parquet file per day, duplicates dropped.

Why no event is ever lost or counted twice, whenever this stops:
- A day is compacted as a whole: its new file is the day's current Parquet file plus the records of every raw
  segment of that day whose event_id it does not hold yet (one record per id, the first received winning). A day's
  file therefore never holds an id twice, and re-running with nothing new writes the same rows again.
- The new file replaces the old in one atomic step (local disk: a rename; S3: one PUT), and only if the day's file
  is still the one that was read (a conditional write): of two compactions running at once, the second to finish
  changes nothing and removes nothing, and says so.
- Only then are raw segments removed, and only those that were read and whose hour is over by GRACE (a writer
  appends to the current hour's segment, which is read again at the next run, harmlessly: its ids are in the
  Parquet file by then). A crash after the write and before or during the removal leaves segments whose records
  are already compacted: the next run reads them, finds their ids, and removes them.
- A segment with lines that cannot be read (a write torn by a crash, never acknowledged; or a format this code
  does not know) is compacted for what it holds and kept, and the run names it: nothing is removed unread.
Segments of one day are read together, so a day's work holds that day's raw records in DuckDB (about 1 GB of
memory for ten million events) and writes one file; S3 objects are downloaded first (training/event_tables.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from recommender.core.errors import NotFound
from recommender.core.event_log import SETTLE_SECONDS
from recommender.core.storage import Storage
from recommender.training import event_tables
from recommender.training.event_tables import RawSegment, Staged

# How long after an hour ends its segments are left alone: a batch begun in its last moments (a slow write, an S3
# put with its retries) may still land in the old hour's partition (core.event_log: SETTLE_SECONDS).
GRACE = timedelta(seconds=SETTLE_SECONDS)


@dataclass
class DayResult:
    """What compacting one day did."""

    day: str
    events: int = 0  # events in the day's file afterwards
    added: int = 0  # events new in it
    repeated: int = 0  # raw records dropped: their id was compacted already, or came twice
    unreadable: int = 0  # raw lines that are not an event
    removed: int = 0  # raw segments removed
    kept: int = 0  # raw segments kept: their hour is not over, or they have unreadable lines
    conflict: bool = False  # another compaction changed the day's file meanwhile: nothing removed


@dataclass
class CompactionResult:
    """What a compaction run did, per day."""

    days: list[DayResult] = field(default_factory=list)
    ignored: tuple[str, ...] = ()
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The run, for the console."""
        if not self.days:
            return ["no raw segments to compact"] + [f"ignored (not a segment): {key}" for key in self.ignored]
        out = []
        for d in self.days:
            if d.conflict:
                out.append(f"{d.day}: another compaction changed this day meanwhile; nothing removed, run again")
                continue
            text = f"{d.day}: {d.events:,} events ({d.added:,} new, {d.repeated:,} repeated records dropped)"
            text += f"; {d.removed:,} raw segments removed, {d.kept:,} kept"
            if d.unreadable:
                text += f"; {d.unreadable:,} unreadable lines (their segments kept)"
            out.append(text)
        out += [f"ignored (not a segment): {key}" for key in self.ignored]
        out.append(f"compacted in {self.seconds:.1f} s")
        return out


def compact(
    storage: Storage,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Callable[[str], None] = lambda _text: None,
) -> CompactionResult:
    """Compact every day that has raw segments into its Parquet file, then remove the segments it consumed."""
    started = time.perf_counter()
    listing = event_tables.list_log(storage)
    result = CompactionResult(ignored=listing.ignored)
    by_day: dict[str, list[RawSegment]] = {}
    for segment in listing.raw:
        by_day.setdefault(segment.day, []).append(segment)
    with event_tables.staged(storage) as stage:
        for day, segments in sorted(by_day.items()):
            done = _compact_day(storage, stage, day, segments, now())
            progress(f"{day}: {done.added:,} new events")
            result.days.append(done)
    result.seconds = time.perf_counter() - started
    return result


def _compact_day(storage: Storage, stage: Staged, day: str, segments: list[RawSegment], now: datetime) -> DayResult:
    done = DayResult(day)
    key = event_tables.day_key(day)
    try:
        data, tag = storage.read_tagged(key)
    except NotFound:
        data, tag = None, None
    con = event_tables.connect()
    old_paths = []
    if data is not None:
        old = stage.scratch(f"old/date={day}/{event_tables.DAY_FILE}")  # a hive path: load_lines reads the day from it
        old.parent.mkdir(parents=True, exist_ok=True)
        old.write_bytes(data)
        old_paths = [str(old)]
    event_tables.load_lines(con, old_paths)
    paths = stage.paths([s.key for s in segments])
    event_tables.load_raw(con, paths)
    con.execute(f"CREATE TEMP TABLE new_lines AS {event_tables.new_lines_sql()}")
    unreadable = dict(
        con.execute("SELECT filename, count(*) FROM raw_records WHERE event_id IS NULL GROUP BY filename").fetchall()
    )
    (records,) = con.execute("SELECT count(*) FROM raw_records WHERE event_id IS NOT NULL").fetchone()
    (done.added,) = con.execute("SELECT count(DISTINCT event_id) FROM new_lines").fetchone()
    done.repeated = records - done.added
    done.unreadable = sum(unreadable.values())
    (before,) = con.execute("SELECT count(DISTINCT event_id) FROM old_lines").fetchone()
    done.events = before + done.added
    if done.added:
        out = stage.scratch(f"new-{day}.parquet")
        columns = ", ".join(event_tables.LINE_COLUMNS)
        con.execute(
            f"""COPY (SELECT {columns} FROM old_lines UNION ALL SELECT {columns} FROM new_lines
                      ORDER BY received_at, event_id, line)
            TO '{str(out).replace("'", "''")}' (FORMAT parquet, COMPRESSION snappy)"""
        )
        if not storage.write_if(key, out.read_bytes(), tag):
            done.conflict = True
            done.added = 0
            return done
        out.unlink()
    con.close()
    for segment, path in zip(segments, paths):
        if segment.closed(now, GRACE) and not unreadable.get(path):
            storage.delete(segment.key)
            done.removed += 1
        else:
            done.kept += 1
    return done
