"""The analytics report against the shop simulator's ground truth (in-process: the serving code's event intake,
compaction, the report's SQL), the attribution rules on hand-made sessions, and the statistics on simulated
experiments (A/A false positives, a better model found, a broken split flagged)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from recommender.core.event_log import LocalEventLog
from recommender.core.settings import Settings
from recommender.core.storage import LocalStorage
from recommender.serving import analytics
from recommender.serving import experiment_stats as st
from recommender.serving.attribution import new_recommendation_id
from recommender.serving.events import Ingest
from recommender.tools import analytics_runs, experiment_report, report_html
from recommender.tools import shop_simulator as sim
from recommender.training.event_compaction import compact

NOW = datetime.now(UTC).replace(microsecond=0)
BASKETS = sim.synthetic_baskets(7)
MODELS = sim.simple_models(BASKETS)


def experiment(name: str = "exp", shares: tuple[int, int] = (50, 50), kinds=("popular", "active")) -> dict:
    return {
        "name": name,
        "started_at": (NOW - timedelta(days=5)).isoformat(),
        "arms": [
            {"name": "control", "kind": kinds[0], "version": None, "share": shares[0]},
            {"name": "b", "kind": kinds[1], "version": None, "share": shares[1]},
        ],
        "attribution_window_hours": 24,
    }


def shop(tmp_path: Path, sessions: int, behaviour=sim.DEFAULT, models=("popular", "together"), seed=0):
    """A store with a running experiment, `sessions` simulated over the last two days, compacted."""
    storage = LocalStorage(tmp_path / "store")
    exp = experiment()
    storage.write(analytics.CURRENT_EXPERIMENT, json.dumps(exp).encode())
    answers = sim.experiment_answers("exp", [("control", 50, MODELS[models[0]]), ("b", 50, MODELS[models[1]])])
    # No memory of recent ids: every re-sent batch reaches the log, where the report must count it once.
    ingest = Ingest(LocalEventLog(storage.root), Settings(events_dedupe_ids=0))
    truth = sim.run_local(
        BASKETS, answers, sessions, seed, behaviour, ingest, start=NOW - timedelta(days=2), spread=timedelta(days=2)
    )
    compact(storage, now=lambda: NOW + timedelta(days=1))
    return storage, truth


def test_the_report_equals_the_ground_truth_in_every_cell_with_batches_sent_twice(tmp_path):
    storage, truth = shop(tmp_path, 1500, sim.Behaviour(resend=0.3))
    assert truth.resent > 0
    summary = experiment_report.compute(storage, now=NOW)
    assert len({g["day"] for g in summary["groups"]}) >= 2
    assert sim.differences(truth.cells(), sim.report_cells(summary, "exp")) == []
    assert set(truth.cells()) == {"control", "b"}
    # Every group is an arm of the running experiment: no session outside it.
    assert {g["experiment"] for g in summary["groups"]} == {"exp"}


def test_the_report_page_and_the_stored_figures(tmp_path):
    storage, truth = shop(tmp_path, 800)
    out = tmp_path / "out" / "report.html"
    answer = analytics_runs.report(storage, out=str(out), progress=lambda _t: None)
    page = out.read_text()
    assert answer["experiment"]["headline"] in page.replace("&#x27;", "'")
    assert page.count("data:image/png;base64,") == len(st.METRICS)
    assert analytics.answer(storage)["experiment"]["headline"] == answer["experiment"]["headline"]
    # The model's arm wins: the simulated shoppers buy what goes with their basket.
    assert answer["experiment"]["headline"].startswith("b sells ")
    lines = analytics_runs.summary_lines(answer)
    assert lines[0].startswith("experiment exp: b sells ")
    assert "matplotlib" not in report_html.render(answer, charts=False)


def test_a_broken_split_is_flagged(tmp_path):
    storage, truth = shop(tmp_path, 1500, sim.Behaviour(drop_arm="b", drop_share=0.3))
    answer = analytics_runs.report(storage, out=None, compact_first=False, progress=lambda _t: None)
    srm = answer["experiment"]["sample_ratio"]
    assert srm["broken"] and srm["observed"]["b"] < srm["observed"]["control"]
    assert answer["experiment"]["headline"].startswith("the split is broken")


# --- the attribution rules, session by session ----------------------------------------------------------------


def _events(storage: LocalStorage, events: list[dict], received: datetime) -> None:
    ingest = Ingest(LocalEventLog(storage.root), Settings(events_dedupe_ids=0), clock=lambda: received)
    answer = ingest.ingest(orjson.dumps({"events": events}), "user:test")
    assert answer["refused"] == 0, answer


def _ev(kind: str, session: str, at: datetime, codes, rid=None, eid=None, price=None, quantity=None) -> dict:
    items = []
    for code in codes:
        item = {"stock_code": code}
        if price is not None:
            item["price"] = price
        if quantity is not None:
            item["quantity"] = quantity
        items.append(item)
    event = {
        "event_id": eid or f"{kind}-{session}-{at.timestamp():.0f}-{codes[0]}",
        "type": kind,
        "ts": sim._ts(at),
        "session_id": session,
        "items": items,
    }
    if rid:
        event["recommendation_id"] = rid
    return event


def test_attribution_window_most_recent_answer_feed_price_and_duplicates(tmp_path):
    from recommender.training.feed import publish_feed

    storage = LocalStorage(tmp_path / "store")
    feed = tmp_path / "feed.csv"
    feed.write_text("id,price\nA,2.5\nB,4\nC,1\n")
    publish_feed(storage, feed, progress=lambda _m: None)
    t0 = NOW - timedelta(days=3)
    r1 = new_recommendation_id("v1", int(t0.timestamp() * 1000))
    r2 = new_recommendation_id("v1", int(t0.timestamp() * 1000) + 1)
    day1 = [
        # s1: shown A, B; A bought 23 h later (attributed, feed price 2.5 x 2), B 25 h later (too late).
        _ev("view", "s1", t0, ["A", "B"], r1),
        _ev("click", "s1", t0 + timedelta(seconds=5), ["A"], r1, eid="click-1"),
        # s2: shown C at t0 and again 20 h later by another answer: a purchase 30 h after t0 is within 24 h of the
        # second answer (the most recent that showed it), with its own price.
        _ev("view", "s2", t0, ["C"], r2),
        # s3: a purchase of an item no answer of its session showed (shown in s1): not attributed.
        _ev("view", "s3", t0, ["B"], new_recommendation_id("v1", 1_700_000_000_000)),
    ]
    _events(storage, day1, t0 + timedelta(minutes=1))
    r3 = new_recommendation_id("v1", int(t0.timestamp() * 1000) + 2)
    day2 = [
        _ev("purchase", "s1", t0 + timedelta(hours=23), ["A"], quantity=2),
        _ev("purchase", "s1", t0 + timedelta(hours=25), ["B"], price=100.0),
        _ev("view", "s2", t0 + timedelta(hours=20), ["C"], r3),
        _ev("purchase", "s2", t0 + timedelta(hours=30), ["C"], price=7.0, quantity=3),
        _ev("purchase", "s3", t0 + timedelta(hours=1), ["A"], price=50.0),
        # The click sent again a day later (another process, after midnight): counted once.
        _ev("click", "s1", t0 + timedelta(seconds=5), ["A"], r1, eid="click-1"),
    ]
    _events(storage, day2, t0 + timedelta(days=1, hours=7))
    compact(storage, now=lambda: NOW + timedelta(days=1))
    rows = {r["session_id"]: r for r in experiment_report.session_rows(storage)}
    assert rows["s1"]["revenue"] == pytest.approx(5.0) and rows["s1"]["purchases"] == 2 - 1
    assert rows["s1"]["clicks"] == 1 and rows["s1"]["impressions"] == 2
    assert rows["s2"]["revenue"] == pytest.approx(21.0) and rows["s2"]["answers"] == 2
    assert rows["s3"]["revenue"] == 0 and rows["s3"]["converted"] == 0
    # A shorter window: s1's purchase 23 h later is then outside it.
    short = {r["session_id"]: r for r in experiment_report.session_rows(storage, window_hours=12)}
    assert short["s1"]["revenue"] == 0
    summary = experiment_report.compute(storage, frm=(t0 - timedelta(days=1)).date().isoformat(), now=NOW)
    # The pair: A clicked in a session whose purchases held B.
    assert summary["pairs"] == [{"held": "B", "clicked": "A", "sessions": 1}]


# --- the statistics on simulated experiments (in-process, no SQL) ------------------------------------------------


def _sums(truth: sim.Truth) -> dict[str, st.Sums]:
    out: dict[str, st.Sums] = {}
    for row in truth.sessions:
        sums = out.setdefault(row["arm"], st.Sums())
        sums.sessions += 1
        for name in st.COUNTS:
            sums.s[name] += row[name]
        for name in st.SQUARES:
            sums.q[name] += row[name] ** 2
        for a, b in st.PRODUCTS:
            sums.x[f"{a}_{b}"] += row[a] * row[b]
    return out


def test_an_a_a_experiment_declares_a_difference_in_at_most_8_of_100_seeds():
    answers = sim.experiment_answers("aa", [("control", 50, MODELS["together"]), ("b", 50, MODELS["together"])])
    fixed = sequential = 0
    for seed in range(100):
        sums = _sums(sim.run_local(BASKETS, answers, 400, seed))
        c = st.compare(sums["control"], sums["b"], st.PRIMARY, "control", "b")
        fixed += c.significant
        sequential += c.sequentially_significant
    assert fixed <= 8
    assert sequential <= fixed


def test_the_model_beats_popular_on_click_through_and_revenue_per_session():
    answers = sim.experiment_answers("pm", [("control", 50, MODELS["popular"]), ("b", 50, MODELS["together"])])
    sums = _sums(sim.run_local(BASKETS, answers, 3000, 1))
    for metric in ("click_through", "revenue_per_session"):
        c = st.compare(sums["control"], sums["b"], metric, "control", "b")
        assert c.lift > 0 and c.low > 0 and c.seq_low > 0, c


def test_intervals_match_a_bootstrap_of_the_simulated_sessions():
    import numpy as np

    answers = sim.experiment_answers("bs", [("control", 50, MODELS["popular"]), ("b", 50, MODELS["together"])])
    truth = sim.run_local(BASKETS, answers, 3000, 2)
    sums = _sums(truth)
    rows = {arm: [r for r in truth.sessions if r["arm"] == arm] for arm in ("control", "b")}
    gen = np.random.default_rng(0)
    for metric, num, den in (("revenue_per_session", "revenue", None), ("click_through", "clicks", "impressions")):
        arrays = {
            arm: (np.array([r[num] for r in rs], float), np.array([r[den] if den else 1 for r in rs], float))
            for arm, rs in rows.items()
        }

        def value(arm: str, pick) -> float:
            x, y = arrays[arm]
            return x[pick].sum() / y[pick].sum()

        lifts = []
        for _ in range(1000):
            a = gen.integers(0, len(arrays["control"][0]), len(arrays["control"][0]))
            b = gen.integers(0, len(arrays["b"][0]), len(arrays["b"][0]))
            lifts.append(value("b", b) / value("control", a) - 1)
        c = st.compare(sums["control"], sums["b"], metric, "control", "b")
        delta_se = (c.high - c.low) / (2 * st.Z)
        assert abs(delta_se - np.std(lifts, ddof=1)) / np.std(lifts, ddof=1) < 0.10, metric
