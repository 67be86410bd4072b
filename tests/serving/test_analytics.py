"""The statistics of the analytics report (serving.experiment_stats) and GET /analytics's figures
(serving.analytics): against direct computations, scipy, and the promises the report makes."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime

import numpy as np
import pytest
from scipy import stats as scipy_stats

from recommender.core.errors import NotFound
from recommender.serving import analytics
from recommender.serving import experiment_stats as st

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def group(day: str, arm: str | None, sessions: list[dict], experiment: str | None = "exp") -> dict:
    """A report row (sums of per-session counts), as the report's SQL gives it."""
    row = {"day": day, "experiment": experiment if arm else None, "arm": arm, "sessions": len(sessions)}
    for name in st.COUNTS:
        row[f"s_{name}"] = float(sum(s[name] for s in sessions))
    for name in st.SQUARES:
        row[f"q_{name}"] = float(sum(s[name] ** 2 for s in sessions))
    for a, b in st.PRODUCTS:
        row[f"x_{a}_{b}"] = float(sum(s[a] * s[b] for s in sessions))
    return row


def fake_sessions(rng: random.Random, n: int, click: float, spend: float) -> list[dict]:
    out = []
    for _ in range(n):
        impressions = 5
        clicks = sum(rng.random() < click for _ in range(impressions))
        converted = 1 if clicks and rng.random() < 0.6 else 0
        carted = 1 if clicks and rng.random() < 0.7 else 0
        revenue = round(rng.expovariate(1 / spend), 2) if converted else 0.0
        out.append(
            {
                "answers": 1,
                "impressions": impressions,
                "clicks": clicks,
                "add_to_carts": carted,
                "purchases": converted,
                "carted": carted,
                "converted": converted,
                "revenue": revenue,
            }
        )
    return out


EXPERIMENT = {
    "name": "exp",
    "started_at": "2026-11-30T00:00:00Z",
    "arms": [
        {"name": "control", "kind": "popular", "version": None, "share": 50},
        {"name": "b", "kind": "active", "version": None, "share": 50},
    ],
    "attribution_window_hours": 24,
}


def store_summary(storage, experiment: dict = EXPERIMENT, seed: int = 0) -> dict:
    """A running experiment of two arms over two days, and a report's sums of it (b clicks and sells more)."""
    rng = random.Random(seed)
    groups = []
    for day in ("2026-11-30", "2026-12-01"):
        groups.append(group(day, "control", fake_sessions(rng, 400, 0.05, 20)))
        groups.append(group(day, "b", fake_sessions(rng, 400, 0.12, 20)))
        groups.append(group(day, None, fake_sessions(rng, 100, 0.05, 20)))
    summary = {
        "computed_at": "2026-12-02T10:00:00Z",
        "from": "2026-11-30",
        "to": "2026-12-02",
        "window_hours": 24,
        "experiments": [experiment],
        "groups": groups,
        "pairs": [{"held": "A", "clicked": "B", "sessions": 3}],
    }
    storage.write(analytics.CURRENT_EXPERIMENT, json.dumps(experiment).encode())
    storage.write(analytics.SUMMARY_KEY, json.dumps(summary).encode())
    return summary


def as_sums(sessions: list[dict]) -> st.Sums:
    return st.Sums.from_row(group("d", "a", sessions))


def test_a_mean_and_a_ratio_with_the_variance_of_a_direct_computation():
    rng = random.Random(1)
    sessions = fake_sessions(rng, 3000, 0.1, 15)
    revenue = np.array([s["revenue"] for s in sessions])
    clicks = np.array([s["clicks"] for s in sessions], dtype=float)
    impressions = np.array([s["impressions"] for s in sessions], dtype=float)
    e = st.estimate(as_sums(sessions), "revenue_per_session")
    assert e.value == pytest.approx(revenue.mean())
    assert e.variance == pytest.approx(revenue.var(ddof=1) / len(revenue))
    ratio = st.estimate(as_sums(sessions), "click_through")
    assert ratio.value == pytest.approx(clicks.sum() / impressions.sum())
    # The delta method's variance of a ratio: Var(x - R y) / (n mean(y)^2).
    r = clicks.sum() / impressions.sum()
    assert ratio.variance == pytest.approx(
        (clicks - r * impressions).var(ddof=1) / (len(clicks) * impressions.mean() ** 2)
    )


def test_the_delta_interval_is_within_10_percent_of_a_bootstrap():
    rng = random.Random(2)
    a, b = fake_sessions(rng, 2000, 0.08, 15), fake_sessions(rng, 2000, 0.1, 15)
    c = st.compare(as_sums(a), as_sums(b), "revenue_per_session", "a", "b")
    ra, rb = np.array([s["revenue"] for s in a]), np.array([s["revenue"] for s in b])
    gen = np.random.default_rng(0)
    lifts = [
        rb[gen.integers(0, len(rb), len(rb))].mean() / ra[gen.integers(0, len(ra), len(ra))].mean() - 1
        for _ in range(2000)
    ]
    boot_se = float(np.std(lifts, ddof=1))
    delta_se = (c.high - c.low) / (2 * st.Z)
    assert abs(delta_se - boot_se) / boot_se < 0.10


def test_the_always_valid_interval_is_never_narrower_than_the_fixed_one():
    rng = random.Random(3)
    for n in (2, 10, 100, 1000, 10_000, 100_000, 10**7):
        assert st.sequential_multiplier(n) > st.Z
    for _ in range(50):
        n = rng.randint(20, 3000)
        c = st.compare(
            as_sums(fake_sessions(rng, n, 0.1, 10)), as_sums(fake_sessions(rng, n, 0.1, 10)), "click_through", "a", "b"
        )
        assert c.seq_low <= c.low and c.seq_high >= c.high


def test_chi_square_tail_matches_scipy():
    for df in (1, 2, 3, 7):
        for x in (0.01, 0.5, 1, 3.84, 10, 40, 120):
            assert st.chi2_sf(x, df) == pytest.approx(scipy_stats.chi2.sf(x, df), rel=1e-9, abs=1e-300)


def test_a_broken_split_is_flagged_and_a_fair_one_is_not():
    fair = st.sample_ratio({"a": 5023, "b": 4977}, {"a": 50, "b": 50})
    assert not fair.broken
    broken = st.sample_ratio({"a": 5000, "b": 4600}, {"a": 50, "b": 50})
    assert broken.broken and broken.p_value < 1e-3
    assert st.headline(None, broken).startswith("the split is broken")
    shares = st.sample_ratio({"control": 1000, "a": 4500, "b": 4500}, {"control": 10, "a": 45, "b": 45})
    assert not shares.broken and shares.expected["control"] == pytest.approx(1000)


def test_the_headline_says_who_sells_more_or_how_many_sessions_are_missing():
    rng = random.Random(4)
    a, b = as_sums(fake_sessions(rng, 5000, 0.05, 20)), as_sums(fake_sessions(rng, 5000, 0.15, 20))
    text = st.headline(st.compare(a, b, st.PRIMARY, "a", "b"))
    assert text.startswith("b sells ") and "more per session than a (95%: +" in text
    small_a, small_b = as_sums(fake_sessions(rng, 50, 0.1, 20)), as_sums(fake_sessions(rng, 50, 0.1, 20))
    unsure = st.compare(small_a, small_b, st.PRIMARY, "a", "b")
    assert not unsure.significant and unsure.sessions_needed > 1000
    assert st.headline(unsure).startswith("not enough data yet: about ")


def test_analytics_sums_days_arms_and_windows(tmp_path):
    from recommender.core.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    assert analytics.answer(storage, now=NOW)["message"].startswith("no report yet")
    summary = store_summary(storage)
    answer = analytics.answer(storage, now=NOW)
    everything = sum(g["sessions"] for g in summary["groups"])
    assert answer["shop"]["last_30_days"]["sessions"] == everything
    assert answer["shop"]["last_7_days"]["sessions"] == everything
    assert analytics.build(summary, [], date(2026, 12, 7))["shop"]["last_7_days"]["sessions"] == 900
    exp = answer["experiment"]
    assert exp["name"] == "exp" and exp["running"] and exp["control"] == "control"
    assert [a["figures"]["sessions"] for a in exp["arms"]] == [800, 800]
    assert exp["headline"].startswith("b sells ")
    assert exp["sample_ratio"]["broken"] is False
    assert [d["day"] for d in exp["days"]] == ["2026-11-30", "2026-12-01"]
    assert {c["metric"] for c in exp["comparisons"]} == set(st.METRICS)
    with pytest.raises(NotFound):
        analytics.answer(storage, "nope", now=NOW)


def test_stopped_experiments_are_listed_after_the_running_one(tmp_path):
    from recommender.core.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    old = {**EXPERIMENT, "name": "old", "started_at": "2026-10-01T00:00:00Z", "stopped_at": "2026-10-20T00:00:00Z"}
    storage.write(f"{analytics.EXPERIMENT_HISTORY}old.json", json.dumps(old).encode())
    assert [e["name"] for e in analytics.experiments(storage)] == ["old"]
    storage.write(analytics.CURRENT_EXPERIMENT, json.dumps(EXPERIMENT).encode())
    found = analytics.experiments(storage)
    assert [(e["name"], e["running"]) for e in found] == [("exp", True), ("old", False)]


def test_an_arm_whose_version_cannot_be_served_is_named(tmp_path):
    from recommender.core.storage import LocalStorage

    storage = LocalStorage(tmp_path)
    broken = {
        **EXPERIMENT,
        "arms": [
            {"name": "control", "kind": "popular", "version": None, "share": 50},
            {"name": "b", "kind": "version", "version": "20260101T000000000Z-gone", "share": 50},
        ],
    }
    store_summary(storage, broken)
    exp = analytics.answer(storage, now=NOW)["experiment"]
    assert exp["warnings"] == [
        "arm b: model version 20260101T000000000Z-gone is missing, so it serves the active model"
    ]
    assert analytics.arm_warnings(storage, {**EXPERIMENT, "running": True}) == []
