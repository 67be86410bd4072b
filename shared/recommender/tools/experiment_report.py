"""The analytics report's figures (make report, GET /analytics): attribution by SQL over the compacted Parquet log,
per-session counts summed per day, experiment and arm, stored as analytics/summary.json for the statistics
(serving.experiment_stats) and the recommend function (serving.analytics) to read.

Attribution (docs/experiments.md, "Measuring what it sells"):
- a session's answers are the recommendation_ids its view and click events carry; its arm (and experiment) is that
  of its first answer, its day the day of that answer;
- impressions are the items of its view events (each item of an answer once);
- a click belongs to the answer whose recommendation_id it carries (each click event once);
- each item of an add_to_cart or purchase belongs to the most recent answer in the same session that showed that
  item (a view event carrying the answer's recommendation_id and the item), within the window before it (24 hours
  unless set otherwise); its revenue is price x quantity (quantity 1 when not given), the price from the event,
  else from the product feed. What no answer showed is not attributed;
- each event_id counts once (an id recorded on two days keeps its first day's record).

The SQL is standard, as the events report's (tools/event_report.py): one table `events` of the Parquet files'
columns and the partition column "date", plus two small tables the report passes in (`feed_prices` and
`experiment_windows`), so that it runs on Athena as it runs on DuckDB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from recommender.core.errors import InvalidInput
from recommender.core.storage import Storage
from recommender.serving import analytics
from recommender.serving.experiment_stats import COUNTS, PRODUCTS, SQUARES
from recommender.training import event_tables

# Per session: its arm and day, answers, impressions, clicks, attributed add-to-carts, purchases and revenue.
# Each event_id counts once without de-duplicating the whole log (the costliest step on a month of events): a copy
# of a view or a click (the same event sent again, on the day it was sent) changes no distinct answer, item or
# click id; only conversions are summed, so only they are reduced to their first day's record.
SESSIONS_SQL = """
WITH views AS (
    SELECT session_id, stock_code, ts
    FROM events
    WHERE type = 'view' AND recommendation_id IS NOT NULL AND stock_code IS NOT NULL
),
answers AS (
    -- impressions: the items of the answer's view (its largest, should it have been sent twice)
    SELECT session_id, recommendation_id, min(arm) AS arm, min(ts) AS first_at,
           coalesce(max(CASE WHEN type = 'view' THEN line END), 0) AS impressions
    FROM events
    WHERE type IN ('view', 'click') AND recommendation_id IS NOT NULL AND session_id IS NOT NULL
    GROUP BY session_id, recommendation_id
),
ranked AS (
    -- when the server gave the answer (unix ms, from its id): what places it in an experiment, whatever the
    -- shopper's clock said
    SELECT session_id, arm, first_at,
           CAST(regexp_extract(recommendation_id, '\\.([0-9]{{10,15}})\\.[0-9a-f]{{8}}$', 1) AS BIGINT) AS answered_ms,
           row_number() OVER (PARTITION BY session_id ORDER BY first_at, recommendation_id) AS rank_in_session,
           count(*) OVER (PARTITION BY session_id) AS answers,
           sum(impressions) OVER (PARTITION BY session_id) AS impressions
    FROM answers
),
clicks AS (
    SELECT session_id, count(DISTINCT event_id) AS clicks
    FROM events
    WHERE type = 'click' AND recommendation_id IS NOT NULL
    GROUP BY session_id
),
conversions AS (
    SELECT event_id, type, ts, session_id, line, stock_code, quantity, price
    FROM (
        SELECT event_id, type, ts, session_id, line, stock_code, quantity, price,
               row_number() OVER (PARTITION BY event_id, line ORDER BY "date") AS copy
        FROM events
        WHERE type IN ('add_to_cart', 'purchase') AND stock_code IS NOT NULL
    ) AS every_copy
    WHERE copy = 1
),
attributed AS (
    -- each item shown by an answer of its session within the window before it, once however many showed it
    SELECT m.session_id, m.type, m.event_id,
           coalesce(m.quantity, 1) * coalesce(m.price, p.price, 0) AS revenue
    FROM (
        SELECT DISTINCT c.session_id, c.type, c.event_id, c.line, c.stock_code, c.quantity, c.price
        FROM conversions AS c
        JOIN views AS s
          ON s.session_id = c.session_id AND s.stock_code = c.stock_code
         AND s.ts <= c.ts AND s.ts > c.ts - INTERVAL '{window_minutes}' MINUTE
    ) AS m
    LEFT JOIN feed_prices AS p ON p.stock_code = m.stock_code
),
converted AS (
    SELECT session_id,
           count(DISTINCT CASE WHEN type = 'add_to_cart' THEN event_id END) AS add_to_carts,
           count(DISTINCT CASE WHEN type = 'purchase' THEN event_id END) AS purchases,
           sum(CASE WHEN type = 'purchase' THEN revenue ELSE 0 END) AS revenue
    FROM attributed
    GROUP BY session_id
)
SELECT r.session_id, r.arm, w.name AS experiment, CAST(r.first_at AS DATE) AS day,
       CAST(r.answers AS DOUBLE) AS answers, CAST(r.impressions AS DOUBLE) AS impressions,
       CAST(coalesce(k.clicks, 0) AS DOUBLE) AS clicks,
       CAST(coalesce(v.add_to_carts, 0) AS DOUBLE) AS add_to_carts,
       CAST(coalesce(v.purchases, 0) AS DOUBLE) AS purchases,
       CAST(CASE WHEN coalesce(v.add_to_carts, 0) > 0 THEN 1 ELSE 0 END AS DOUBLE) AS carted,
       CAST(CASE WHEN coalesce(v.purchases, 0) > 0 THEN 1 ELSE 0 END AS DOUBLE) AS converted,
       CAST(coalesce(v.revenue, 0) AS DOUBLE) AS revenue
FROM ranked AS r
LEFT JOIN clicks AS k ON k.session_id = r.session_id
LEFT JOIN converted AS v ON v.session_id = r.session_id
LEFT JOIN experiment_windows AS w
  ON r.arm IS NOT NULL AND r.answered_ms >= w.started_ms AND (w.stopped_ms IS NULL OR r.answered_ms < w.stopped_ms)
WHERE r.rank_in_session = 1
"""

PAIRS_SQL = """
WITH clicked AS (
    SELECT DISTINCT session_id, stock_code FROM events
    WHERE type = 'click' AND recommendation_id IS NOT NULL AND stock_code IS NOT NULL
),
held AS (
    SELECT DISTINCT session_id, stock_code FROM events
    WHERE type IN ('add_to_cart', 'purchase') AND stock_code IS NOT NULL
)
SELECT h.stock_code AS held, k.stock_code AS clicked, count(*) AS sessions
FROM clicked AS k JOIN held AS h ON h.session_id = k.session_id AND h.stock_code <> k.stock_code
GROUP BY h.stock_code, k.stock_code
ORDER BY sessions DESC, held, clicked
LIMIT {limit}
"""


def groups_sql(sessions: str = "sessions") -> str:
    """SQL of the per-session sums by day, experiment and arm over a table of SESSIONS_SQL's rows."""
    parts = ["count(*) AS sessions"]
    parts += [f"CAST(sum({c}) AS DOUBLE) AS s_{c}" for c in COUNTS]
    parts += [f"CAST(sum({c} * {c}) AS DOUBLE) AS q_{c}" for c in SQUARES]
    parts += [f"CAST(sum({a} * {b}) AS DOUBLE) AS x_{a}_{b}" for a, b in PRODUCTS]
    return (
        f"SELECT CAST(day AS VARCHAR) AS day, experiment, arm, {', '.join(parts)} FROM {sessions} "
        "WHERE day BETWEEN CAST(? AS DATE) AND CAST(? AS DATE) GROUP BY day, experiment, arm ORDER BY day, experiment, arm"
    )


@dataclass(frozen=True)
class Span:
    """The days a report covers (its sessions' first answers), both ends included."""

    first: date
    last: date


def span(frm: str | None, to: str | None, experiment: dict | None, today: date) -> Span:
    """The report's days: FROM and TO when given, else the experiment's days, else the last 30 days."""

    def day(text: str, name: str) -> date:
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            raise InvalidInput(f"{name}={text!r} is not a day: give YYYY-MM-DD") from None

    last = day(to, "TO") if to else today
    if experiment is not None and not to and experiment.get("stopped_at"):
        last = day(experiment["stopped_at"], "stopped_at")
    if frm:
        first = day(frm, "FROM")
    elif experiment is not None:
        first = day(experiment["started_at"], "started_at")
    else:
        first = last - timedelta(days=29)
    if first > last:
        raise InvalidInput(f"FROM={first} is after TO={last}")
    return Span(first, last)


def feed_prices(storage: Storage) -> list[tuple[str, float]]:
    """Each item's price in the active product feed (none without a feed)."""
    from recommender.core import registry
    from recommender.core.errors import RecommenderError
    from recommender.core.feed_and_rules import FEED_FILE

    try:
        feed = registry.active(storage, registry.FEED)
        if feed is None:
            return []
        items = json.loads(registry.read_verified(storage, feed.version, FEED_FILE, registry.FEED))["items"]
    except (RecommenderError, ValueError, KeyError):
        return []
    out = []
    for code, attributes in items.items():
        try:
            out.append((code, float(attributes["price"])))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _epoch_ms(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _tables(storage: Storage, paths: list[str], known: list[dict]) -> Any:
    """A DuckDB connection with the tables the SQL reads: events (the Parquet files), feed_prices and
    experiment_windows."""
    con = event_tables.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(
        "CREATE VIEW events AS SELECT * FROM read_parquet(["
        + ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        + "], hive_partitioning = true, hive_types = {'date': VARCHAR})"
    )
    con.execute("CREATE TEMP TABLE feed_prices (stock_code VARCHAR, price DOUBLE)")
    prices = feed_prices(storage)
    if prices:
        con.executemany("INSERT INTO feed_prices VALUES (?, ?)", prices)
    con.execute("CREATE TEMP TABLE experiment_windows (name VARCHAR, started_ms BIGINT, stopped_ms BIGINT)")
    windows = [(e["name"], _epoch_ms(e.get("started_at")), _epoch_ms(e.get("stopped_at"))) for e in known]
    windows = [w for w in windows if w[1] is not None]
    if windows:
        con.executemany("INSERT INTO experiment_windows VALUES (?, ?, ?)", windows)
    return con


def compute(
    storage: Storage,
    frm: str | None = None,
    to: str | None = None,
    experiment_name: str | None = None,
    window_hours: float = 24,
    now: datetime | None = None,
    pairs: int = 10,
) -> dict:
    """The summary of the report's days: the per-day sums by experiment and arm, the most clicked pairs, the
    experiments known; stored under analytics/summary.json by `store`."""
    now = now or datetime.now(UTC)
    known = analytics.experiments(storage)
    chosen = None
    if experiment_name:
        chosen = next((e for e in known if e["name"] == experiment_name), None)
        if chosen is None:
            names = ", ".join(e["name"] for e in known) or "none yet"
            raise InvalidInput(f"no experiment named {experiment_name!r} (experiments: {names})")
        window_hours = float(chosen.get("attribution_window_hours") or window_hours)
    elif known and known[0].get("running"):  # the running experiment's window, for the figures shown of it
        window_hours = float(known[0].get("attribution_window_hours") or window_hours)
    days = span(frm, to, chosen, now.date())
    listing = event_tables.list_log(storage)
    # Partitions are days of receipt: the day before (late arrivals of its last sessions' events are fine, but a
    # session begun before midnight may be attributed after) and the window after the last day are read too.
    reach = timedelta(hours=window_hours) + timedelta(days=1)
    lo, hi = (days.first - timedelta(days=1)).isoformat(), (days.last + reach).isoformat()
    keys = sorted(key for day, key in listing.days.items() if lo <= day <= hi)
    summary = {
        "computed_at": now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "from": days.first.isoformat(),
        "to": days.last.isoformat(),
        "window_hours": window_hours,
        "experiments": known,
        "groups": [],
        "pairs": [],
    }
    if not keys:
        return summary
    with event_tables.staged(storage) as stage:
        con = _tables(storage, stage.paths(keys), known)
        con.execute(f"CREATE TEMP TABLE sessions AS {SESSIONS_SQL.format(window_minutes=round(window_hours * 60))}")
        cursor = con.execute(groups_sql(), [days.first.isoformat(), days.last.isoformat()])
        names = [d[0] for d in cursor.description]
        summary["groups"] = [dict(zip(names, row)) for row in cursor.fetchall()]
        summary["pairs"] = [
            {"held": h, "clicked": k, "sessions": n}
            for h, k, n in con.execute(PAIRS_SQL.format(limit=int(pairs))).fetchall()
        ]
        con.close()
    return summary


def session_rows(storage: Storage, window_hours: float = 24) -> list[dict]:
    """Every session's counts over the whole log (tests and the bootstrap check read them; small logs only)."""
    listing = event_tables.list_log(storage)
    keys = sorted(listing.days.values())
    if not keys:
        return []
    with event_tables.staged(storage) as stage:
        con = _tables(storage, stage.paths(keys), analytics.experiments(storage))
        cursor = con.execute(SESSIONS_SQL.format(window_minutes=round(window_hours * 60)))
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row)) for row in cursor.fetchall()]
        con.close()
    return rows


def store(storage: Storage, summary: dict) -> None:
    """Store the summary where GET /analytics reads it."""
    storage.write(analytics.SUMMARY_KEY, json.dumps(summary, default=str, separators=(",", ":")).encode())
