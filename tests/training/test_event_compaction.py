"""Compaction of the event log, on local disk and S3 (moto): duplicates dropped (the first received wins), re-runs
change nothing, a crash between the write and the cleanup loses and doubles nothing, open hours are left to grow,
unreadable lines keep their segment."""

from datetime import UTC, datetime

import duckdb
import pytest

from recommender.core.errors import InvalidInput
from recommender.serving.attribution import parse_recommendation_id
from recommender.training import event_tables
from recommender.training.event_compaction import compact
from tests.training.event_fixtures import OTHER, VERSION, append, event, rid, segment_key, write_segment

LATER = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)  # every hour of the fixtures is over


def rows(storage, day: str) -> list[tuple]:
    """(event_id, line, stock_code, received_at) of a day's Parquet file."""
    con = event_tables.connect()
    with event_tables.staged(storage) as stage:
        (path,) = stage.paths([event_tables.day_key(day)])
        return con.execute(
            f"SELECT event_id, line, stock_code, CAST(received_at AS VARCHAR) FROM read_parquet('{path}') "
            "ORDER BY event_id, line"
        ).fetchall()


def sample(storage):
    """Two writers, one event sent twice to each, a purchase of two items, a view without items."""
    append(
        storage,
        [
            event("e1", "view", "2026-12-01T10:00:00Z", items=["A", "B"], rec=rid()),
            event("e2", "click", "2026-12-01T10:01:00Z", items=["A"], rec=rid()),
            event("e3", "purchase", "2026-12-01T10:05:00Z", items=[("A", 2, 3.5), ("C", 1, 1.0)], value=8.0),
            event("e4", "view", "2026-12-01T11:00:00Z", items=[]),
        ],
    )
    append(
        storage,
        [
            # e2 again, received later and different (its later copy must lose)
            event("e2", "click", "2026-12-01T10:01:00Z", items=["Z"], rec=rid(), received="2026-12-01T10:30:00Z"),
            event("e3", "purchase", "2026-12-01T10:05:00Z", items=[("A", 2, 3.5), ("C", 1, 1.0)], value=8.0),
        ],
        name="writer-2",
    )


EXPECTED = [
    ("e1", 1, "A", "2026-12-01 10:00:00"),
    ("e1", 2, "B", "2026-12-01 10:00:00"),
    ("e2", 1, "A", "2026-12-01 10:01:00"),
    ("e3", 1, "A", "2026-12-01 10:05:00"),
    ("e3", 2, "C", "2026-12-01 10:05:00"),
    ("e4", None, None, "2026-12-01 11:00:00"),
]


def test_duplicates_are_dropped_the_first_received_wins_and_segments_removed(storage):
    sample(storage)
    result = compact(storage, now=lambda: LATER)
    (day,) = result.days
    assert (day.day, day.events, day.added, day.repeated, day.removed, day.kept) == ("2026-12-01", 4, 4, 2, 3, 0)
    assert rows(storage, "2026-12-01") == EXPECTED
    assert storage.list(event_tables.RAW) == []
    assert storage.list(event_tables.PARQUET) == [event_tables.day_key("2026-12-01")]


def test_a_rerun_changes_nothing_and_new_segments_merge_into_the_day(storage):
    sample(storage)
    compact(storage, now=lambda: LATER)
    before = storage.read(event_tables.day_key("2026-12-01"))
    again = compact(storage, now=lambda: LATER)
    assert again.days == [] and storage.read(event_tables.day_key("2026-12-01")) == before
    # a late segment: one known id (sent again), one new
    write_segment(
        storage,
        "events/raw/date=2026-12-01/hour=23/1764630000000-late.jsonl",
        [
            event("e1", "view", "2026-12-01T10:00:00Z", items=["Q"], received="2026-12-01T23:00:00Z"),
            event("e5", "click", "2026-12-01T23:00:00Z", items=["B"], rec=rid(OTHER)),
        ],
    )
    (day,) = compact(storage, now=lambda: LATER).days
    assert (day.events, day.added, day.repeated, day.removed) == (5, 1, 1, 1)
    assert rows(storage, "2026-12-01") == sorted(EXPECTED + [("e5", 1, "B", "2026-12-01 23:00:00")], key=str)


def test_a_crash_between_write_and_cleanup_loses_and_doubles_nothing(storage, monkeypatch):
    sample(storage)
    calls = []
    original = type(storage).delete

    def crash(self, key):
        calls.append(key)
        if len(calls) == 2:  # the first segment is gone, then the process dies
            raise KeyboardInterrupt
        return original(self, key)

    monkeypatch.setattr(type(storage), "delete", crash)
    with pytest.raises(KeyboardInterrupt):
        compact(storage, now=lambda: LATER)
    monkeypatch.setattr(type(storage), "delete", original)
    assert len(storage.list(event_tables.RAW)) == 2 and rows(storage, "2026-12-01") == EXPECTED
    (day,) = compact(storage, now=lambda: LATER).days
    assert (day.events, day.added, day.removed) == (4, 0, 2)
    assert rows(storage, "2026-12-01") == EXPECTED and storage.list(event_tables.RAW) == []


def test_a_crash_before_the_write_leaves_the_log_as_it_was(storage, monkeypatch):
    sample(storage)
    raw = {key: storage.read(key) for key in storage.list(event_tables.RAW)}

    def dies(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(storage), "write_if", dies)
    with pytest.raises(KeyboardInterrupt):
        compact(storage, now=lambda: LATER)
    assert {key: storage.read(key) for key in storage.list(event_tables.RAW)} == raw
    assert storage.list(event_tables.PARQUET) == []


def test_the_current_hour_is_compacted_but_kept_until_it_is_over(storage):
    first = event("e1", "view", "2026-12-02T10:10:00Z", items=["A"], rec=rid())
    append(storage, [first])
    (day,) = compact(storage, now=lambda: datetime(2026, 12, 2, 10, 30, tzinfo=UTC)).days
    assert (day.events, day.removed, day.kept) == (1, 0, 1)
    append(storage, [event("e2", "click", "2026-12-02T10:40:00Z", items=["A"], rec=rid())])
    # within the grace after the hour a writer may still append: kept
    (day,) = compact(storage, now=lambda: datetime(2026, 12, 2, 11, 2, tzinfo=UTC)).days
    assert (day.events, day.added, day.repeated, day.kept) == (2, 1, 1, 1)
    (day,) = compact(storage, now=lambda: datetime(2026, 12, 2, 11, 6, tzinfo=UTC)).days
    assert (day.events, day.added, day.removed) == (2, 0, 1)
    assert [r[0] for r in rows(storage, "2026-12-02")] == ["e1", "e2"]


def test_unreadable_lines_keep_their_segment(storage):
    key = segment_key("2026-12-01T10:00:00Z")
    write_segment(
        storage, key, [event("e1", "view", "2026-12-01T10:00:00Z", items=["A"])], tail=b'{"event_id": "e2", "ty'
    )
    (day,) = compact(storage, now=lambda: LATER).days
    assert (day.events, day.unreadable, day.removed, day.kept) == (1, 1, 0, 1)
    assert storage.list(event_tables.RAW) == [key]
    assert "1 unreadable lines (their segments kept)" in compact(storage, now=lambda: LATER).lines()[0]


def test_a_concurrent_compaction_makes_this_one_remove_nothing(storage, monkeypatch):
    sample(storage)
    monkeypatch.setattr(type(storage), "write_if", lambda self, key, data, tag: False)
    (day,) = compact(storage, now=lambda: LATER).days
    assert day.conflict and len(storage.list(event_tables.RAW)) == 3
    assert "another compaction" in compact(storage, now=lambda: LATER).lines()[0]


def test_files_that_are_not_segments_are_named_and_left_alone(storage):
    storage.write("events/raw/notes.txt", b"hello")
    result = compact(storage, now=lambda: LATER)
    assert result.lines() == ["no raw segments to compact", "ignored (not a segment): events/raw/notes.txt"]
    assert storage.list("events/") == ["events/raw/notes.txt"]


@pytest.mark.parametrize(
    "text",
    [
        rid(),
        rid(OTHER, arm="treatment_b"),
        f"r1.{VERSION}.-.1764669600000.0123ABCD",  # upper-case hex: not an id
        f"r2.{VERSION}.-.1764669600000.0123abcd",
        f"r1.{VERSION}.-.1764669600000.0123abcd.extra",
        "r1.v.-.123.0123abcd",
        "nonsense",
    ],
)
def test_the_sql_reads_recommendation_ids_as_serving_parses_them(text):
    try:
        ref = parse_recommendation_id(text)
        expected = (ref.version, ref.arm)
    except InvalidInput:
        expected = (None, None)
    pattern = event_tables.RECOMMENDATION_ID
    got = (
        duckdb.connect()
        .execute(
            f"SELECT nullif(regexp_extract(?, '{pattern}', 1), ''), "
            f"nullif(nullif(regexp_extract(?, '{pattern}', 2), ''), '-')",
            [text, text],
        )
        .fetchone()
    )
    assert got == expected
