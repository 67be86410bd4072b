"""Taking in shoppers' events (POST /events): each event of a batch checked on its own, the accepted ones stored in
the durable event log (core.event_log) before the answer, and recent re-sent ids answered "duplicate".

Duplicates: each process remembers the ids it stored in the last EVENTS_DEDUPE_SECONDS, at most EVENTS_DEDUPE_IDS
of them (the oldest forgotten first), and answers a re-sent one "duplicate" without storing it again. Another
process (or Lambda instance), or a re-send after that, stores it again: whatever reads the log counts each
event_id once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from recommender.core.errors import InvalidInput
from recommender.core.event_log import EventLog, iso_utc
from recommender.core.settings import Settings
from recommender.serving.attribution import parse_recommendation_id
from recommender.serving.event_schemas import EventIn

# How far a `ts` may lie from the server's clock: older events are refused (a client re-sending a month-old queue
# has lost track), and so are events from the future beyond a device clock's plausible error.
MAX_PAST = timedelta(days=30)
MAX_FUTURE = timedelta(days=1)
# Unix milliseconds below this (3 March 1973) are most likely seconds.
_MS_FLOOR = 10**11


class RecentIds:
    """The event ids stored lately by this process: at most `capacity`, each for `seconds` (thread-safe)."""

    def __init__(self, capacity: int, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.seconds, self.clock = capacity, seconds, clock
        self._until: OrderedDict[str, float] = OrderedDict()  # id -> when it is forgotten, oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, event_id: str) -> bool:
        with self._lock:
            until = self._until.get(event_id)
            return until is not None and until > self.clock()

    def add(self, event_ids: list[str]) -> None:
        """Remember ids just stored; forget the expired, and the oldest beyond capacity."""
        if self.capacity <= 0:
            return
        with self._lock:
            now = self.clock()
            until = now + self.seconds
            for event_id in event_ids:
                self._until[event_id] = until
                self._until.move_to_end(event_id)
            while self._until and (len(self._until) > self.capacity or next(iter(self._until.values())) <= now):
                self._until.popitem(last=False)


def _reason(err: ValidationError) -> str:
    """The first problem pydantic found, as "field: message"."""
    first = err.errors(include_url=False)[0]
    loc = first.get("loc", ())
    if loc and loc[0] == "ts" and len(loc) > 1:  # neither member of the union: say what either would be
        return "ts: send ISO 8601 with a zone (a string) or unix milliseconds (an integer)"
    where = ".".join(str(part) for part in loc) or "event"
    return f"{where}: {first.get('msg', 'invalid')}"


def event_time(ts: str | int, now: datetime) -> datetime:
    """ts (ISO 8601 with a zone, or unix milliseconds) as a UTC time within the accepted bounds; ValueError with
    the reason otherwise."""
    if isinstance(ts, int):
        hint = " (it looks like seconds: send milliseconds)" if 0 < ts < _MS_FLOOR else ""
        try:
            moment = datetime.fromtimestamp(ts / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"ts: {ts} is not a time in unix milliseconds{hint}") from None
    else:
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            raise ValueError(f"ts: {ts!r} is neither ISO 8601 (2026-12-02T10:15:00Z) nor unix milliseconds") from None
        if moment.tzinfo is None:
            raise ValueError(f"ts: {ts!r} has no time zone: add Z (UTC) or an offset such as +01:00")
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:  # the year 1 or 9999 with an offset that leaves datetime's range
            raise ValueError(f"ts: {ts!r} is out of range") from None
        hint = ""
    if moment < now - MAX_PAST:
        raise ValueError(f"ts: {iso_utc(moment)} is more than {MAX_PAST.days} days ago{hint}")
    if moment > now + MAX_FUTURE:
        raise ValueError(f"ts: {iso_utc(moment)} is more than {MAX_FUTURE.days} day ahead of the server's clock")
    return moment


def _record(event: EventIn, moment: datetime, received: str, source: str) -> dict[str, Any]:
    items = []
    for item in event.items:
        code = item.stock_code.strip()
        if not code:
            raise ValueError("items: a stock_code is blank")
        items.append({"stock_code": code, "quantity": item.quantity, "price": item.price})
    if event.recommendation_id is not None:
        try:
            parse_recommendation_id(event.recommendation_id)
        except InvalidInput as err:
            raise ValueError(err.message) from None
    return {
        "event_id": event.event_id,
        "type": event.type,
        "ts": iso_utc(moment),
        "session_id": event.session_id,
        "user_id": event.user_id,
        "recommendation_id": event.recommendation_id,
        "items": items,
        "value": event.value,
        "currency": event.currency.upper() if event.currency is not None else None,
        "received_at": received,
        "source": source,
    }


def read_batch(body: bytes, max_batch: int) -> list[Any]:
    """The events of a request body, unchecked; InvalidInput when the body is not a batch of at most max_batch."""
    if not body.strip():
        raise InvalidInput('the request body is empty: send {"events": [...]}')
    try:
        batch = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"request body is not valid JSON ({err})") from None
    events = batch.get("events") if isinstance(batch, dict) else None
    if not isinstance(events, list):
        raise InvalidInput('the request body must be a JSON object with a list "events": {"events": [...]}')
    if len(events) > max_batch:
        raise InvalidInput(
            f"a batch holds at most {max_batch} events and this one has {len(events)}: send them in several batches"
        )
    return events


class Ingest:
    """Checks batches of events and stores the accepted ones in the log before answering (one per process)."""

    def __init__(self, log: EventLog, settings: Settings, clock: Callable[[], datetime] | None = None) -> None:
        self.log = log
        self.max_batch = settings.events_max_batch
        self.recent = RecentIds(settings.events_dedupe_ids, settings.events_dedupe_seconds)
        self.clock = clock or (lambda: datetime.now(UTC))

    def ingest(self, body: bytes, source: str) -> dict[str, Any]:
        """Check and store a request body's batch; its EventsOut. InvalidInput for a batch-level problem,
        StoreUnavailable when the log cannot store the accepted events (none of them is then acknowledged)."""
        events = read_batch(body, self.max_batch)
        now = self.clock()
        received = iso_utc(now)
        results: list[dict[str, Any]] = []
        lines: list[bytes] = []
        stored: list[str] = []
        in_batch: set[str] = set()
        duplicates = refused = 0
        for raw in events:
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            shown = event_id[:100] if isinstance(event_id, str) else None
            try:
                if not isinstance(raw, dict):
                    raise ValueError("an event must be a JSON object")
                event = EventIn.model_validate(raw)
                moment = event_time(event.ts, now)
                record = _record(event, moment, received, source)
            except ValidationError as err:
                results.append({"event_id": shown, "status": "refused", "reason": _reason(err)})
                refused += 1
                continue
            except ValueError as err:
                results.append({"event_id": shown, "status": "refused", "reason": str(err)})
                refused += 1
                continue
            if event.event_id in in_batch or event.event_id in self.recent:
                why = "sent earlier in this batch" if event.event_id in in_batch else "already stored"
                results.append({"event_id": event.event_id, "status": "duplicate", "reason": why})
                duplicates += 1
                continue
            in_batch.add(event.event_id)
            lines.append(orjson.dumps(record) + b"\n")
            stored.append(event.event_id)
            results.append({"event_id": event.event_id, "status": "accepted"})
        if lines:
            # Stored before anything is acknowledged: a failure here answers 503 for the whole batch.
            self.log.append(b"".join(lines), now)
            self.recent.add(stored)
        return {"results": results, "accepted": len(stored), "duplicates": duplicates, "refused": refused}
