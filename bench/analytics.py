"""Report benchmark: a month of a shop's events (SESSIONS a day, each shown 5 recommendations in a view, clicking
some, adding some to the cart, buying a basket of 4 that holds some shown items), generated straight into the
compacted Parquet layout by DuckDB, then the analytics report's figures (tools/experiment_report.compute: the
attribution SQL, per-session sums by day and arm, the most clicked pairs) timed over it."""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.common import say
from bench.options import Options
from bench.report import PartResult, Row, target_row
from recommender.core.storage import LocalStorage
from recommender.training import event_tables

# One day's events, one row per item, in the Parquet files' columns (training/event_tables.py, LINE_COLUMNS).
DAY_SQL = """
COPY (
WITH s AS (
    SELECT i, 'd{tag}s' || i AS session_id,
           TIMESTAMP '{day} 00:00:00' + to_milliseconds(CAST(i * 86400000 // {n} AS BIGINT)) AS t0,
           CASE WHEN hash(i + {seed}) % 2 = 0 THEN 'control' ELSE 'b' END AS arm,
           'r1.v1.' || (CASE WHEN hash(i + {seed}) % 2 = 0 THEN 'control' ELSE 'b' END) || '.1700000000000.'
               || substr(md5('{tag}' || i), 1, 8) AS rid
    FROM range({n}) AS r(i)
),
shown AS (
    SELECT s.*, k AS line, 'P' || CAST((i * 7 + k * 131) % 5000 AS VARCHAR) AS code
    FROM s, range(1, 6) AS t(k)
),
views AS (
    SELECT 'v{tag}-' || i AS event_id, 'view' AS type, t0 AS ts, session_id, rid, arm, line, code,
           CAST(NULL AS DOUBLE) AS quantity, CAST(NULL AS DOUBLE) AS price
    FROM shown
),
clicks AS (
    SELECT 'c{tag}-' || i || '-' || line AS event_id, 'click' AS type, t0 + INTERVAL 20 SECOND AS ts, session_id,
           rid, arm, 1 AS line, code, NULL, NULL
    FROM shown WHERE random() < CASE WHEN arm = 'b' THEN 0.11 ELSE 0.10 END
),
carts AS (
    SELECT 'a{tag}-' || i || '-' || line, 'add_to_cart', t0 + INTERVAL 40 SECOND, session_id, NULL, NULL, 1, code,
           1.0, 2.5
    FROM shown WHERE random() < 0.04
),
bought AS (
    SELECT s.*, k AS line,
           CASE WHEN random() < CASE WHEN s.arm = 'b' THEN 0.21 ELSE 0.2 END
                THEN 'P' || CAST((i * 7 + k * 131) % 5000 AS VARCHAR)
                ELSE 'Q' || CAST((i * 13 + k) % 3000 AS VARCHAR) END AS code
    FROM s, range(1, 5) AS t(k)
    WHERE hash(i * 31 + {seed}) % 3 = 0
),
purchases AS (
    SELECT 'p{tag}-' || i, 'purchase', t0 + INTERVAL 10 MINUTE, session_id, NULL, NULL, line, code,
           CAST(1 + line % 3 AS DOUBLE), 1.0 + (line % 5)
    FROM bought
),
every AS (
    SELECT * FROM views UNION ALL SELECT * FROM clicks UNION ALL SELECT * FROM carts UNION ALL SELECT * FROM purchases
)
SELECT event_id, type, ts, session_id, CAST(NULL AS VARCHAR) AS user_id, rid AS recommendation_id,
       CASE WHEN rid IS NULL THEN NULL ELSE 'v1' END AS model_version, arm, CAST(line AS INTEGER) AS line,
       code AS stock_code, quantity, price, CAST(NULL AS DOUBLE) AS value, 'GBP' AS currency,
       ts + INTERVAL 1 SECOND AS received_at, 'bench' AS source
FROM every
) TO '{path}' (FORMAT parquet, COMPRESSION snappy)
"""


def generate(root: Path, days: int, sessions: int, last: date) -> int:
    """Write `days` days of events ending at `last` under root's Parquet layout; the rows written."""
    con = event_tables.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SELECT setseed(0.42)")
    rows = 0
    for k in range(days):
        day = last - timedelta(days=days - 1 - k)
        path = root / event_tables.day_key(day.isoformat())
        path.parent.mkdir(parents=True, exist_ok=True)
        sql = DAY_SQL.format(tag=k, day=day.isoformat(), n=sessions, seed=k * 7919, path=str(path))
        con.execute(sql)
        (count,) = con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()
        rows += count
    con.close()
    return rows


def bench_report(options: Options) -> PartResult:
    """Part report: the analytics report over a month of generated events."""
    from recommender.tools import experiment_report

    days, sessions = options.report_days, options.report_sessions
    work = Path(tempfile.mkdtemp(prefix="recommender-bench-report-"))
    try:
        storage = LocalStorage(work / "data")
        now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
        last = now.date() - timedelta(days=1)
        say(f"generating {days} days of {sessions:,} sessions a day as Parquet")
        started = time.perf_counter()
        rows = generate(storage.root, days, sessions, last)
        generated = time.perf_counter() - started
        say(f"  {rows:,} rows in {generated:.1f} s; computing the report")
        started = time.perf_counter()
        summary = experiment_report.compute(storage, frm=(last - timedelta(days=days - 1)).isoformat(), now=now)
        seconds = time.perf_counter() - started
        counted = sum(g["sessions"] for g in summary["groups"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"  report over {counted:,} sessions in {seconds:.1f} s")
    rows_out = [
        target_row(
            "report",
            f"analytics report, {days} days x {sessions:,} sessions/day ({rows / 1e6:.1f}M rows)",
            "report_seconds",
            seconds,
            "s",
        ),
        Row("report", "sessions reported", counted, "", note=f"of {days * sessions:,} generated"),
    ]
    md = [
        "## report details",
        "",
        f"{days} days of {sessions:,} sessions a day written straight to the compacted layout (one Parquet file a "
        f"day, {rows:,} rows: a view of 5 items per session, clicks, add-to-carts, a purchase of 4 items in a "
        "third of the sessions), generated in "
        f"{generated:.1f} s; the report's SQL (attribution within 24 hours, per-session sums by day and arm, the "
        f"top pairs) over all of it took {seconds:.2f} s on DuckDB, reading the files where they lie.",
    ]
    details = {"days": days, "sessions_per_day": sessions, "rows": rows, "seconds": seconds, "sessions": counted}
    return PartResult("report", rows_out, details, "", 0, [], [], options.quick, "\n".join(md))
