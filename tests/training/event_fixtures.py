"""Hand-built event logs in the layout POST /events writes: raw JSON-lines segments under events/raw/."""

from __future__ import annotations

import json
from datetime import datetime

from recommender.core.errors import NotFound
from recommender.core.storage import Storage

VERSION = "20261201T100000000Z-abcdef120a0b"
OTHER = "20261202T090000000Z-12345678ffff"


def rid(version: str = VERSION, at_ms: int = 1764669600000, tail: str = "0123abcd", arm: str = "-") -> str:
    """A recommendation id as serving.attribution gives them."""
    return f"r1.{version}.{arm}.{at_ms}.{tail}"


def event(
    event_id: str,
    type: str,
    ts: str,
    session: str = "s1",
    items: list | tuple = (),
    rec: str | None = None,
    user: str | None = None,
    value: float | None = None,
    currency: str | None = None,
    received: str | None = None,
) -> dict:
    """One raw record; items given as codes or (code, quantity, price)."""
    lines = []
    for item in items:
        code, quantity, price = (item, None, None) if isinstance(item, str) else item
        lines.append({"stock_code": code, "quantity": quantity, "price": price})
    return {
        "event_id": event_id,
        "type": type,
        "ts": ts,
        "session_id": session,
        "user_id": user,
        "recommendation_id": rec,
        "items": lines,
        "value": value,
        "currency": currency,
        "received_at": received or ts,
        "source": "test",
    }


def segment_key(received: str, name: str = "writer-1") -> str:
    """The raw segment a record received at `received` goes to."""
    when = datetime.fromisoformat(received.replace("Z", "+00:00"))
    return f"events/raw/date={when:%Y-%m-%d}/hour={when:%H}/{name}.jsonl"


def write_segment(storage: Storage, key: str, records: list[dict], tail: bytes = b"") -> None:
    """A segment holding records (one JSON line each), plus raw tail bytes (a torn write)."""
    body = b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail
    storage.write(key, body)


def append(storage: Storage, records: list[dict], name: str = "writer-1") -> None:
    """Append records to the segments their received_at puts them in, as a local writer does."""
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(segment_key(record["received_at"], name), []).append(record)
    for key, group in grouped.items():
        try:
            body = storage.read(key)
        except NotFound:
            body = b""
        storage.write(key, body + b"".join(json.dumps(r).encode() + b"\n" for r in group))
