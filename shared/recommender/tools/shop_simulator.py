"""The shop simulator (make simulate_shop): shoppers whose behaviour is known, sent to the recommender the way a
shop's pages would, so that every number of the report can be checked against the truth.

Each session is a real basket (the last 30 days of a transactions file, else the served model's sample invoices):
the shopper starts holding part of it, asks for recommendations (session_id in the body: the experiment assigns the
arm), sees them (a view carrying the answer's recommendation_id and items), clicks a shown item that is in the rest
of the real basket with probability `click`, adds a clicked one to the cart with probability `cart`, then buys the
whole basket (one purchase). Now and then a batch of events is sent again (`resend`): the report must count it once.
`drop_arm` silently loses that share of one arm's sessions (a broken split the ratio check must flag).

The truth is what the simulator sent, tallied per arm by the attribution rules themselves (an item bought or added
to the cart is attributed when the session's answer showed it): `Truth.cells` is what the report must equal.

Two paths share the session logic: `shop_http.run_http` drives a running server over HTTP (X-API-Key or a user's
token), `run_local` calls an answer function and the serving code's own event intake in-process (fast, any clock: the
statistical tests and the benchmark use it).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from recommender.core.errors import DataFileError, InvalidInput

BATCH = 50  # events per POST /events, as the widget sends them
MAX_BASKET = 50  # items of a basket sent (the longest real invoices are wholesale lists, not shoppers)


@dataclass(frozen=True)
class Line:
    """One item of a real basket."""

    code: str
    quantity: int
    price: float | None


@dataclass(frozen=True)
class Behaviour:
    """How shoppers act (probabilities)."""

    n: int = 5  # items asked for
    held: float = 0.5  # share of the basket held when asking
    click: float = 0.6  # a shown item that is in the rest of the basket is clicked
    cart: float = 0.7  # a clicked item is added to the cart
    resend: float = 0.02  # a batch is sent again
    drop_arm: str | None = None  # sessions of this arm lost ...
    drop_share: float = 0.0  # ... with this probability


DEFAULT = Behaviour()


@dataclass(frozen=True)
class Answer:
    """What the recommender answered a session."""

    recommendation_id: str
    arm: str | None
    codes: tuple[str, ...]
    prices: dict[str, float] = field(default_factory=dict)  # the prices the answer showed


CELLS = ("sessions", "answers", "impressions", "clicks", "add_to_carts", "purchases", "carted", "converted")


@dataclass
class Truth:
    """What was sent, per arm, counted by the attribution rules; and each session's counts."""

    arms: dict[str, dict[str, float]] = field(default_factory=dict)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    resent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, row: dict[str, Any]) -> None:
        with self.lock:
            self.sessions.append(row)
            cell = self.arms.setdefault(row["arm"] or "-", dict.fromkeys((*CELLS, "revenue"), 0.0))
            cell["sessions"] += 1
            for name in CELLS[1:]:
                cell[name] += row[name]
            cell["revenue"] += row["revenue"]

    def cells(self) -> dict[str, dict[str, float]]:
        """Per arm: the counts (integers) and the revenue (to the cent)."""
        return {
            arm: {k: (round(v, 2) if k == "revenue" else int(v)) for k, v in sorted(cell.items())}
            for arm, cell in sorted(self.arms.items())
        }


def assign(experiment: str, unit: str, arms: list[tuple[str, float]]) -> str:
    """The arm of a session or user: sha256("<experiment>:<unit>"), first 8 bytes big-endian, mod 10,000, over the
    arms' consecutive share ranges (percent), as serving assigns it."""
    bucket = int.from_bytes(hashlib.sha256(f"{experiment}:{unit}".encode()).digest()[:8], "big") % 10000
    edge = 0.0
    for name, share in arms:
        edge += share * 100
        if bucket < edge:
            return name
    return arms[-1][0]


# --- baskets ----------------------------------------------------------------------------------------------------


def load_baskets(path: str, days: int = 30) -> list[list[Line]]:
    """The invoices of the last `days` days of a transactions file (by InvoiceDate; all of them without dates),
    cancellations, returns and invalid lines left out."""
    import pandas as pd

    from recommender.training.ingest import as_frame, read_chunks

    frames = [as_frame(c) for c in read_chunks(path)]
    if not frames:
        raise DataFileError(f"{path}: no rows")
    data = pd.concat(frames, ignore_index=True)
    for column in ("InvoiceNo", "StockCode"):
        if column not in data:
            raise DataFileError(f"{path}: no {column} column")
    data["InvoiceNo"] = data["InvoiceNo"].astype(str).str.strip()
    data["StockCode"] = data["StockCode"].astype(str).str.strip()
    data = data[(data["StockCode"] != "") & ~data["InvoiceNo"].str.upper().str.startswith("C")]
    quantity = pd.to_numeric(data.get("Quantity", pd.Series(1, index=data.index)), errors="coerce").fillna(1)
    data = data.assign(Quantity=quantity)[quantity >= 1]
    price = pd.to_numeric(data.get("UnitPrice", pd.Series(float("nan"), index=data.index)), errors="coerce")
    data = data.assign(UnitPrice=price.where(price >= 0))
    if "InvoiceDate" in data:
        when = pd.to_datetime(data["InvoiceDate"], errors="coerce", dayfirst=False)
        if when.notna().any():
            last = when.max()
            data = data[when > last - pd.Timedelta(days=days)]
    baskets = []
    for _, group in data.groupby("InvoiceNo", sort=True):
        lines = [
            Line(code, int(min(q, 1_000_000)), None if p != p else round(float(p), 2))
            for code, q, p in zip(group["StockCode"], group["Quantity"], group["UnitPrice"])
        ]
        if len({line.code for line in lines}) >= 2:
            baskets.append(lines[:MAX_BASKET])
    if not baskets:
        raise DataFileError(f"{path}: no invoice of two items or more in its last {days} days")
    return baskets


def sample_baskets(storage: Any) -> list[list[Line]]:
    """The served model's sample invoices (its training data): the baskets when no file is given."""
    import json

    from recommender.core import registry

    version = registry.active_version(storage)
    raw = json.loads(storage.read(registry.artifact_key(version, registry.SAMPLES)))
    baskets = [[Line(code, 1, None) for code in inv["items"]][:MAX_BASKET] for inv in raw["invoices"]]
    return [b for b in baskets if len(b) >= 2]


# --- one session --------------------------------------------------------------------------------------------------


def _id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def split(basket: list[Line], behaviour: Behaviour, rng: random.Random) -> tuple[list[Line], list[Line]]:
    """The part held when asking, and the rest."""
    order = basket[:]
    rng.shuffle(order)
    k = min(len(order) - 1, max(1, round(len(order) * behaviour.held)))
    return order[:k], order[k:]


def session_events(
    session_id: str,
    held: list[Line],
    rest: list[Line],
    answer: Answer,
    behaviour: Behaviour,
    rng: random.Random,
    start: datetime,
    prices: dict[str, float],
) -> tuple[list[dict], dict[str, Any]]:
    """A session's events after its answer, and its truth (counted by the attribution rules)."""
    shown = list(dict.fromkeys(answer.codes))
    rid = answer.recommendation_id
    # A shop's page sends the price it showed: a line without one takes the answer's (the feed's) price.
    held = [Line(x.code, x.quantity, answer.prices.get(x.code)) if x.price is None else x for x in held]
    rest = [Line(x.code, x.quantity, answer.prices.get(x.code)) if x.price is None else x for x in rest]
    clock = itertools.count(1)

    def at() -> str:
        return _ts(start + timedelta(seconds=next(clock)))

    def item(line: Line) -> dict:
        out: dict[str, Any] = {"stock_code": line.code, "quantity": line.quantity}
        if line.price is not None:
            out["price"] = line.price
        return out

    def base(kind: str, items: list[dict], with_id: bool) -> dict:
        event = {"event_id": _id(rng), "type": kind, "ts": at(), "session_id": session_id, "items": items}
        if with_id:
            event["recommendation_id"] = rid
        return event

    events = [base("view", [{"stock_code": c} for c in shown], True)] if shown else []
    in_rest = {line.code: line for line in rest}
    clicks = carts = 0
    for code in shown:
        if code in in_rest and rng.random() < behaviour.click:
            events.append(base("click", [{"stock_code": code}], True))
            clicks += 1
            if rng.random() < behaviour.cart:
                events.append(base("add_to_cart", [item(in_rest[code])], False))
                carts += 1
    basket = held + rest
    events.append(base("purchase", [item(line) for line in basket], False))
    seen = set(shown)
    revenue = 0.0
    attributed = 0
    for line in basket:
        if line.code in seen:
            attributed += 1
            price = line.price if line.price is not None else prices.get(line.code, 0.0)
            revenue += line.quantity * price
    truth = {
        "session_id": session_id,
        "arm": answer.arm,
        "answers": 1,
        "impressions": len(shown),
        "clicks": clicks,
        "add_to_carts": carts,
        "purchases": 1 if attributed else 0,
        "carted": 1 if carts else 0,
        "converted": 1 if attributed else 0,
        "revenue": revenue,
    }
    return events, truth


def sessions(baskets: list[list[Line]], count: int, seed: int) -> Iterator[tuple[int, str, list[Line], random.Random]]:
    """The simulated sessions: index, session id, basket and a generator of their own (reproducible by seed)."""
    if not baskets:
        raise InvalidInput("no baskets to simulate sessions from")
    master = random.Random(seed)
    for i in range(count):
        rng = random.Random(master.getrandbits(64))
        yield i, _id(rng), baskets[rng.randrange(len(baskets))], rng


# --- in-process ---------------------------------------------------------------------------------------------------

AnswerFn = Callable[[list[str], int, str], Answer]


def run_local(
    baskets: list[list[Line]],
    answer_fn: AnswerFn,
    count: int,
    seed: int = 0,
    behaviour: Behaviour = DEFAULT,
    ingest: Any = None,
    start: datetime | None = None,
    spread: timedelta = timedelta(hours=1),
    prices: dict[str, float] | None = None,
) -> Truth:
    """Simulate sessions in-process; with `ingest` (serving.events.Ingest), store their events through it, each
    batch at its sessions' time (its clock is set to it), sessions spread evenly over `spread` from `start`."""
    truth = Truth()
    start = start or datetime.now(UTC) - spread
    pending: list[dict] = []
    step = spread / max(1, count)
    moment = start

    def flush() -> None:
        nonlocal pending
        if ingest is None or not pending:
            pending = []
            return
        body = orjson.dumps({"events": pending})
        ingest.clock = lambda m=moment: m + timedelta(minutes=5)
        check_answer(ingest.ingest(body, "user:simulator"), len(pending))
        truth.events += len(pending)
        if rng.random() < behaviour.resend:
            ingest.ingest(body, "user:simulator")  # answered duplicate (the same process remembers the ids)
            truth.resent += len(pending)
        pending = []

    rng = random.Random(seed ^ 0x5EED)
    for i, session_id, basket, srng in sessions(baskets, count, seed):
        moment = start + step * i
        held, rest = split(basket, behaviour, srng)
        answer = answer_fn([line.code for line in held], behaviour.n, session_id)
        events, row = session_events(session_id, held, rest, answer, behaviour, srng, moment, prices or {})
        if behaviour.drop_arm is not None and answer.arm == behaviour.drop_arm and srng.random() < behaviour.drop_share:
            continue
        if row["impressions"]:  # an empty answer shows nothing: no view, no session for the report
            truth.add(row)
        pending.extend(events)
        if len(pending) >= BATCH:
            flush()
    flush()
    return truth


def check_answer(result: dict, sent: int) -> None:
    """InvalidInput when the server refused any of the events sent (the simulator sends only valid ones)."""
    refused = [r for r in result.get("results", []) if r.get("status") == "refused"]
    if refused:
        raise InvalidInput(f"the server refused {len(refused)} of {sent} simulated events: {refused[0]}")


# --- checking the report ------------------------------------------------------------------------------------------


def report_cells(summary: dict, experiment: str | None = None) -> dict[str, dict[str, float]]:
    """The report's counts per arm ("-" for none), summed over its days: what Truth.cells must equal."""
    out: dict[str, dict[str, float]] = {}
    for group in summary.get("groups", []):
        if experiment is not None and group.get("experiment") != experiment:
            continue
        cell = out.setdefault(group.get("arm") or "-", dict.fromkeys((*CELLS, "revenue"), 0.0))
        cell["sessions"] += group["sessions"]
        for name in (*CELLS[1:], "revenue"):
            cell[name] += group[f"s_{name}"] or 0.0
    return {
        arm: {k: (round(v, 2) if k == "revenue" else int(v)) for k, v in sorted(cell.items())}
        for arm, cell in sorted(out.items())
    }


def differences(truth: dict[str, dict[str, float]], report: dict[str, dict[str, float]]) -> list[str]:
    """Each cell where the report differs from the truth, as a line."""
    lines = []
    for arm in sorted(set(truth) | set(report)):
        for name in (*CELLS, "revenue"):
            sent = truth.get(arm, {}).get(name, 0)
            seen = report.get(arm, {}).get(name, 0)
            if abs(sent - seen) > (0.011 if name == "revenue" else 0):
                lines.append(f"arm {arm}: {name} sent {sent:,} but the report says {seen:,}")
    return lines


# --- a shop in a box (tests, the benchmark) ----------------------------------------------------------------------


def synthetic_baskets(seed: int = 0, groups: int = 40, per_group: int = 10, count: int = 3000) -> list[list[Line]]:
    """Baskets with a structure to learn: each mostly from one group of products that go together."""
    rng = random.Random(seed)
    codes = [f"P{g:03d}{i:02d}" for g in range(groups) for i in range(per_group)]
    price = {c: round(rng.uniform(1, 20), 2) for c in codes}
    baskets = []
    for _ in range(count):
        group = rng.randrange(groups)
        chosen = rng.sample(range(per_group), rng.randint(2, 5))
        lines = [f"P{group:03d}{i:02d}" for i in chosen]
        if rng.random() < 0.5:
            lines.append(rng.choice(codes))
        lines = list(dict.fromkeys(lines))
        baskets.append([Line(c, rng.randint(1, 3), price[c]) for c in lines])
    return baskets


def simple_models(baskets: list[list[Line]]) -> dict[str, Callable[[list[str], int], list[str]]]:
    """Two recommenders learnt from baskets: "popular" (the most bought items) and "together" (items most often
    bought with the basket's)."""
    from collections import Counter

    counts: Counter[str] = Counter()
    pairs: dict[str, Counter[str]] = {}
    for basket in baskets:
        codes = list(dict.fromkeys(line.code for line in basket))
        counts.update(codes)
        for a in codes:
            mine = pairs.setdefault(a, Counter())
            mine.update(b for b in codes if b != a)
    ranked = [c for c, _ in counts.most_common()]

    def popular(held: list[str], n: int) -> list[str]:
        have = set(held)
        return [c for c in ranked if c not in have][:n]

    def together(held: list[str], n: int) -> list[str]:
        have = set(held)
        score: Counter[str] = Counter()
        for code in held:
            score.update(pairs.get(code, {}))
        out = [c for c, _ in score.most_common() if c not in have][:n]
        return out + [c for c in popular(held, n) if c not in out][: n - len(out)]

    return {"popular": popular, "together": together}


def experiment_answers(
    name: str, arms: list[tuple[str, float, Callable[[list[str], int], list[str]]]], version: str = "sim"
) -> AnswerFn:
    """Answers as a server running experiment `name` gives them: each session's arm by `assign`, its
    recommendation_id naming version and arm."""
    from recommender.serving.attribution import new_recommendation_id

    shares = [(arm, share) for arm, share, _ in arms]
    models = {arm: model for arm, _, model in arms}

    def answer(held: list[str], n: int, session_id: str) -> Answer:
        arm = assign(name, session_id, shares)
        rid = new_recommendation_id(version, int(time.time() * 1000), arm)
        return Answer(rid, arm, tuple(models[arm](held, n)))

    return answer
