"""The events report on a hand-built log whose answers are known: views, clicks, add-to-carts, purchases and revenue
per day and model version, attribution by recommendation id or by an earlier click in the session within 24 h,
each event id counted once; local and S3; and its SQL kept to what Athena also runs."""

import re
from datetime import UTC, datetime

from recommender import cli
from recommender.core.settings import get_settings
from recommender.core.storage import open_storage
from recommender.tools.event_report import REPORT_SQL, ReportRow, format_report, report
from recommender.training.event_compaction import compact
from tests.training.event_fixtures import OTHER, VERSION, append, event, rid, write_segment

V1, V2 = VERSION, OTHER
R1, R2 = rid(V1), rid(V2, tail="99999999")


def record(storage) -> None:
    """The log the expectations below are worked out from (docs/event-analytics.md walks through the rules)."""
    d1 = "2026-12-01T10:{:02d}:00Z".format
    append(
        storage,
        [
            # s1: shown and clicked from V1, A put in the cart; the purchase holds A (clicked) and D (never shown)
            event("e1", "view", d1(0), "s1", ["A", "B", "C"], R1),
            event("e2", "click", d1(1), "s1", ["A"], R1),
            event("e3", "add_to_cart", d1(2), "s1", [("A", 1, 3.0)]),
            event("e4", "purchase", d1(3), "s1", [("A", 2, 3.0), ("D", 1, 10.0)], value=16.0, currency="GBP"),
            # s2: two views and a click from V2; the purchase carries V2's id: its whole value counts
            event("e5", "view", d1(0), "s2", ["A", "B"], R2),
            event("e6", "view", d1(1), "s2", ["A", "B"], R2),
            event("e7", "click", d1(2), "s2", ["B"], R2),
            event("e8", "purchase", d1(3), "s2", [("B", 1, 5.0)], R2, value=12.5, currency="GBP"),
            # s3: C clicked from V1; bought 23 h later (V1's, on day 2) and again 25 h later (nobody's)
            event("e9", "click", d1(0), "s3", ["C"], R1),
            event("e10", "purchase", "2026-12-02T09:00:00Z", "s3", [("C", 1, 4.0)], currency="GBP"),
            event("e11", "purchase", "2026-12-02T11:00:00Z", "s3", [("C", 1, 4.0)], currency="GBP"),
            # s4: A bought, clicked in another session only: nobody's
            event("e12", "purchase", d1(30), "s4", [("A", 1, 3.0)], currency="GBP"),
            # s5: E clicked from V1, then from V2: the most recent click wins
            event("e13", "click", d1(0), "s5", ["E"], R1),
            event("e14", "click", d1(5), "s5", ["E"], R2),
            event("e15", "purchase", d1(10), "s5", [("E", 1, 2.0)], currency="GBP"),
        ],
    )
    # sent again: e2 by a second writer, e8 after midnight (another day's partition): each still counts once
    append(storage, [event("e2", "click", d1(1), "s1", ["A"], R1, received=d1(20))], name="writer-2")
    write_segment(
        storage,
        "events/raw/date=2026-12-02/hour=00/1764633600000-resent.jsonl",
        [
            event(
                "e8",
                "purchase",
                d1(3),
                "s2",
                [("B", 1, 5.0)],
                R2,
                value=12.5,
                currency="GBP",
                received="2026-12-02T00:00:05Z",
            )
        ],
    )


EXPECTED = [
    ReportRow("2026-12-01", V1, 1, 3, 3.0, 1, 1, 6.0, "GBP"),
    ReportRow("2026-12-01", V2, 2, 2, 1.0, 0, 2, 14.5, "GBP"),
    ReportRow("2026-12-01", None, 0, 0, None, 0, 2, 13.0, "GBP"),
    ReportRow("2026-12-02", V1, 0, 0, None, 0, 1, 4.0, "GBP"),
    ReportRow("2026-12-02", None, 0, 0, None, 0, 1, 4.0, "GBP"),
]


def test_report_numbers_on_a_known_log(storage):
    record(storage)
    compact(storage, now=lambda: datetime(2026, 12, 3, tzinfo=UTC))
    rows = report(storage)
    # V1 and V2 sort by name; "(none)" comes last on each day
    assert rows == sorted(EXPECTED[:3], key=lambda r: r.model_version or "~") + EXPECTED[3:]
    # from a day on: the day before is read too (events received before midnight, copies sent again after it)
    assert report(storage, since="2026-12-02") == EXPECTED[3:]
    lines = format_report(rows)
    assert lines[0].split() == [
        "day",
        "model",
        "version",
        "views",
        "clicks",
        "CTR",
        "add",
        "to",
        "cart",
        "purchases",
        "revenue",
    ]
    assert lines[-1].split() == ["2026-12-02", "(none)", "0", "0", "-", "0", "1", "4.00", "GBP"]


def test_make_events_report_compacts_first(capsys):
    record(open_storage(get_settings()))
    assert cli.main(["events-report"]) == 0
    out = capsys.readouterr().out
    assert "2026-12-01: 13 events (13 new, 1 repeated records dropped)" in out
    assert "2026-12-02: 3 events (3 new, 0 repeated records dropped)" in out  # e10, e11, and e8 again
    assert re.search(r"2026-12-01\s+\(none\)\s+0\s+0\s+-\s+0\s+2\s+13\.00 GBP", out)
    assert cli.main(["events-report", "--no-compact", "--since", "2030-01-01"]) == 0
    assert "no compacted events yet" in capsys.readouterr().out


def test_the_sql_is_portable_to_athena():
    """Nothing DuckDB-only: no QUALIFY, :: casts, list or struct functions, strftime, or lower-case date literals;
    the partition column quoted ("date" is reserved in Athena)."""
    for construct in ("QUALIFY", "::", "strftime", "list_", "struct", "unnest", "epoch", "date_trunc("):
        assert construct.lower() not in REPORT_SQL.lower(), construct
    assert re.findall(r'(?<!")(?<!AS )\bdate\b(?!")', REPORT_SQL, re.I) == []  # CAST(... AS DATE) is the type
