"""The events report (make events_report): per day and model version, views, clicks, click-through, add-to-carts,
purchases and attributed revenue, by SQL over the compacted Parquet log.

The SQL is standard (no DuckDB-only function), so the same text runs on Athena over the same files
(docs/event-analytics.md has the table definition). It reads one table, `events`, with the Parquet files' columns
(training/event_tables.py, LINE_COLUMNS: one row per item of an event) and the partition column "date".

Attribution, kept simple:
- a view or a click belongs to the model version of the recommendation_id it carries;
- an add_to_cart or purchase carrying a recommendation_id belongs, whole, to that id's version (its revenue: its
  value, else the sum of its items' price x quantity);
- otherwise each of its items belongs to the version of the most recent click on that item in the same session
  within the 24 hours before it, if any (its revenue: price x quantity, quantity 1 when not given);
- what belongs to no version is reported on the "(none)" line of its day. An event whose items came from two
  answers counts once for each version.
Each event_id counts once: an id recorded on two days keeps its first day's record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from recommender.core.errors import InvalidInput
from recommender.core.storage import Storage
from recommender.training import event_tables

REPORT_SQL = """
WITH firsts AS (
    SELECT event_id, min("date") AS first_date FROM events GROUP BY event_id
),
lines AS (
    SELECT e.* FROM events AS e
    JOIN firsts AS f ON e.event_id = f.event_id AND e."date" = f.first_date
),
clicked AS (
    SELECT event_id AS click_id, session_id, stock_code, ts AS clicked_at, model_version
    FROM lines
    WHERE type = 'click' AND stock_code IS NOT NULL AND model_version IS NOT NULL
),
conversions AS (
    SELECT event_id, type, ts, session_id, coalesce(line, 0) AS line, stock_code, currency, value,
           model_version AS own_version, price * coalesce(quantity, 1) AS line_revenue
    FROM lines
    WHERE type IN ('add_to_cart', 'purchase')
),
matches AS (
    SELECT c.event_id, c.line, k.model_version,
           row_number() OVER (PARTITION BY c.event_id, c.line ORDER BY k.clicked_at DESC, k.click_id) AS recency
    FROM conversions AS c
    JOIN clicked AS k
      ON k.session_id = c.session_id AND k.stock_code = c.stock_code
     AND k.clicked_at <= c.ts AND k.clicked_at > c.ts - INTERVAL '1' DAY
    WHERE c.own_version IS NULL
),
by_answer AS (
    SELECT event_id, type, CAST(min(ts) AS DATE) AS day, own_version AS version, min(currency) AS currency,
           coalesce(max(value), sum(line_revenue)) AS revenue
    FROM conversions
    WHERE own_version IS NOT NULL
    GROUP BY event_id, type, own_version
),
by_click AS (
    SELECT c.event_id, c.type, CAST(min(c.ts) AS DATE) AS day, m.model_version AS version,
           min(c.currency) AS currency, sum(c.line_revenue) AS revenue
    FROM conversions AS c
    LEFT JOIN matches AS m ON m.event_id = c.event_id AND m.line = c.line AND m.recency = 1
    WHERE c.own_version IS NULL
    GROUP BY c.event_id, c.type, m.model_version
),
facts AS (
    SELECT event_id, type, CAST(min(ts) AS DATE) AS day, model_version AS version,
           CAST(NULL AS VARCHAR) AS currency, CAST(NULL AS DOUBLE) AS revenue
    FROM lines
    WHERE type IN ('view', 'click')
    GROUP BY event_id, type, model_version
    UNION ALL SELECT event_id, type, day, version, currency, revenue FROM by_answer
    UNION ALL SELECT event_id, type, day, version, currency, revenue FROM by_click
),
totals AS (
    SELECT day, version,
           count(DISTINCT CASE WHEN type = 'view' THEN event_id END) AS views,
           count(DISTINCT CASE WHEN type = 'click' THEN event_id END) AS clicks,
           count(DISTINCT CASE WHEN type = 'add_to_cart' THEN event_id END) AS add_to_carts,
           count(DISTINCT CASE WHEN type = 'purchase' THEN event_id END) AS purchases,
           sum(CASE WHEN type = 'purchase' THEN revenue END) AS revenue,
           min(CASE WHEN type = 'purchase' THEN currency END) AS low_currency,
           max(CASE WHEN type = 'purchase' THEN currency END) AS high_currency
    FROM facts
    GROUP BY day, version
)
SELECT day, version AS model_version, views, clicks,
       CAST(clicks AS DOUBLE) / nullif(views, 0) AS click_through,
       add_to_carts, purchases, coalesce(revenue, 0) AS revenue,
       CASE WHEN low_currency = high_currency THEN low_currency
            WHEN low_currency IS NULL THEN NULL ELSE 'mixed' END AS currency
FROM totals
ORDER BY day, model_version NULLS LAST
"""

COLUMNS = (
    "day",
    "model_version",
    "views",
    "clicks",
    "click_through",
    "add_to_carts",
    "purchases",
    "revenue",
    "currency",
)


@dataclass(frozen=True)
class ReportRow:
    """One line of the report: a day and a model version (None: what no version earned)."""

    day: str | None
    model_version: str | None
    views: int
    clicks: int
    click_through: float | None
    add_to_carts: int
    purchases: int
    revenue: float
    currency: str | None


def report(storage: Storage, since: str | None = None) -> list[ReportRow]:
    """The report over the compacted days, or its days from `since` (YYYY-MM-DD): the partitions from the day
    before are read, for the events of that day received after midnight and the copies sent again after it."""
    listing = event_tables.list_log(storage)
    first = None
    if since is not None:
        try:
            first = (date.fromisoformat(since) - timedelta(days=1)).isoformat()
        except ValueError:
            raise InvalidInput(f"SINCE={since!r} is not a day: give YYYY-MM-DD") from None
    days = sorted(key for day, key in listing.days.items() if first is None or day >= first)
    if not days:
        return []
    with event_tables.staged(storage) as stage:
        con = event_tables.connect()
        paths = stage.paths(days)
        con.execute(
            "CREATE VIEW events AS SELECT * FROM read_parquet("
            + "["
            + ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
            + "]"
            + ", hive_partitioning = true, hive_types = {'date': VARCHAR})"
        )
        rows = con.execute(REPORT_SQL).fetchall()
        con.close()
    found = [ReportRow(str(r[0]) if r[0] is not None else None, *r[1:]) for r in rows]
    return [r for r in found if since is None or (r.day is not None and r.day >= since)]


def format_report(rows: list[ReportRow]) -> list[str]:
    """The report as an aligned table for the console."""
    if not rows:
        return ["no compacted events yet: POST /events records them (make events_compact compacts them)"]
    header = ("day", "model version", "views", "clicks", "CTR", "add to cart", "purchases", "revenue")
    table = [header]
    for r in rows:
        revenue = f"{r.revenue:,.2f}" + (f" {r.currency}" if r.currency else "")
        table.append(
            (
                r.day or "(no time)",
                r.model_version or "(none)",
                f"{r.views:,}",
                f"{r.clicks:,}",
                f"{r.click_through:.1%}" if r.click_through is not None else "-",
                f"{r.add_to_carts:,}",
                f"{r.purchases:,}",
                revenue,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in table
    ]
