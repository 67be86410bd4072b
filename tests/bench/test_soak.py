"""The pieces of make soak (the soak itself is a separate make target): the feed and rules files it publishes are
accepted by the real readers, and its report counts errors and memory growth after warm-up."""

import random

import numpy as np

from bench.soak import Events, SoakPlan, summarize
from recommender.training.feed import read_feed
from recommender.training.rules import read_rules

CODES = [f"{20000 + i}" for i in range(60)] + ["85123A", "POST"]


def test_feed_and_rules_files_are_valid(tmp_path):
    from bench.soak import write_feed_csv, write_rules_yaml

    rng = random.Random(3)
    prices = np.full(len(CODES), np.nan)
    prices[::2] = 2.5
    write_feed_csv(CODES, prices, rng, tmp_path / "feed.csv")
    assert len(read_feed(tmp_path / "feed.csv").items) == len(CODES)
    write_rules_yaml(CODES, rng, tmp_path / "rules.yaml")
    rules, _ = read_rules(tmp_path / "rules.yaml")
    assert len(rules["block"]["codes"]) == 5 and rules["pin"] and rules["boost"] and rules["do_not_pair"]


def _point(t, errors=0, rss=100.0):
    return {
        "t": t,
        "seconds": 10.0,
        "requests": 4000,
        "p50_ms": 2.0,
        "p99_ms": 10.0 + t / 100,
        "errors": errors,
        "rss_mib": rss,
    }


def test_report_counts_errors_and_growth_after_warmup():
    plan = SoakPlan(duration=120, warmup_seconds=60)
    series = [_point(t) for t in range(0, 120, 10)]
    rss = [(t, 50.0 + t / 2 if t < 30 else 100.0 + (t - 30) / 10) for t in range(0, 121, 2)]  # warm-up, then slow
    events = Events()
    events.count("model promotions")
    report = summarize(plan, series, rss, events, [[1.0, 1.0, 1.0]])
    assert report["errors"] == 0 and report["requests"] == 48_000 and report["requests_per_second"] == 400
    assert report["rss_mib"]["warmup_s"] == 90  # until each of the 3 versions was promoted once (every 30 s)
    assert 0 < report["rss_mib"]["growth_percent"] < 2  # the warm-up jump is not counted
    long = summarize(SoakPlan(duration=600), series, [(t, 100.0 + t / 10) for t in range(0, 601, 2)], events, [])
    assert long["rss_mib"]["warmup_s"] == 90 and long["rss_mib"]["window_s"] == 60
    assert 40 < long["rss_mib"]["growth_percent"] < 50  # steady growth is counted: 112 -> 157 MiB
    assert report["events"] == {"model promotions": 1}
    series[3]["errors"] = 2
    events.problems.append("promote failed")
    assert summarize(plan, series, rss, events, [])["errors"] == 3
