"""What `make report` and `make simulate_shop` run: compaction, the report's figures (stored for GET /analytics),
the HTML page; and the simulated shop checked against the report, cell by cell."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from recommender.core.errors import InvalidInput
from recommender.core.storage import Storage
from recommender.serving import analytics
from recommender.serving import experiment_stats as st
from recommender.tools import experiment_report, report_html, shop_http, shop_simulator
from recommender.training.event_compaction import compact


def report(
    storage: Storage,
    experiment: str | None = None,
    frm: str | None = None,
    to: str | None = None,
    out: str | None = "report.html",
    window_hours: float = 24,
    compact_first: bool = True,
    progress: Callable[[str], None] = print,
) -> dict:
    """Compact, compute and store the figures, write the HTML page (unless out is None); the /analytics answer."""
    if compact_first:
        for line in compact(storage).lines():
            progress(line)
    started = time.perf_counter()
    summary = experiment_report.compute(storage, frm, to, experiment, window_hours)
    experiment_report.store(storage, summary)
    answer = analytics.build(summary, summary["experiments"], _today(summary), experiment, storage)
    progress(f"report computed in {time.perf_counter() - started:.1f} s")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(report_html.render(answer), encoding="utf-8")
        progress(f"report written to {out}")
    return answer


def _today(summary: dict):
    from datetime import date

    return date.fromisoformat(summary["computed_at"][:10])


def summary_lines(answer: dict) -> list[str]:
    """The report in a few lines, for the console."""
    if answer.get("computed_at") is None:
        return [answer.get("message") or "no data"]
    lines = []
    exp = answer.get("experiment")
    if exp:
        lines.append(f"experiment {exp['name']}: {exp['headline']}")
        lines += [f"WARNING: {w}" for w in exp.get("warnings", [])]
        srm = exp.get("sample_ratio")
        if srm and srm["broken"]:
            lines.append(
                f"WARNING: the split is broken (sessions {srm['observed']}, expected {srm['expected']}, "
                f"p = {srm['p_value']:.2g})"
            )
        for arm in exp["arms"]:
            f = arm["figures"]
            lines.append(
                f"  {arm['name']}: {f['sessions']:,} sessions, CTR {_pct(f['click_through'])}, "
                f"conversion {_pct(f['conversion_rate'])}, revenue/session {_num(f['revenue_per_session'])}"
            )
        for c in exp["comparisons"]:
            if c["metric"] in (st.PRIMARY, "click_through") and c["lift"] is not None and c["low"] is not None:
                lines.append(
                    f"  {c['arm']} vs {c['control']}, {st.METRICS[c['metric']][0]}: {st.percent(c['lift'])} "
                    f"(95%: {st.percent(c['low'])} to {st.percent(c['high'])}; always valid: "
                    f"{st.percent(c['sequential_low'])} to {st.percent(c['sequential_high'])})"
                )
    shop = answer["shop"].get("last_30_days", {})
    lines.append(
        f"last 30 days: {shop.get('sessions', 0):,} sessions with recommendations, "
        f"{shop.get('purchases', 0):,} attributed purchases, revenue {_num(shop.get('revenue'))}"
    )
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def credentials(url: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The simulator's headers: API_KEY's (X-API-Key), else a token for USER_NAME and PASSWORD from the server."""
    if environ.get("API_KEY"):
        return {"X-API-Key": environ["API_KEY"]}
    if environ.get("USER_NAME") and environ.get("PASSWORD"):
        form = urlencode({"username": environ["USER_NAME"], "password": environ["PASSWORD"]}).encode()
        reply = shop_http.HttpClient(url, {}).post("/token", form, "application/x-www-form-urlencoded")
        if reply.status_code != 200:
            raise InvalidInput(f"POST /token answered {reply.status_code}: {reply.text[:200]}")
        return {"Authorization": f"Bearer {reply.json()['access_token']}"}
    raise InvalidInput(
        "give a key of scopes recommend,events (make add_key NAME=simulator SCOPES=recommend,events, then "
        "API_KEY=rk_...) or a user (USER_NAME= PASSWORD=)"
    )


@dataclass
class Simulated:
    """A simulation's outcome: its truth, the report's answer and the cells that differ."""

    truth: shop_simulator.Truth
    answer: dict
    differences: list[str]
    truth_path: Path


def simulate(
    storage: Storage,
    server: shop_http.Server,
    sessions: int,
    data: str | None = None,
    seed: int = 0,
    behaviour: shop_simulator.Behaviour = shop_simulator.DEFAULT,
    out: str = "report.html",
    progress: Callable[[str], None] = print,
) -> Simulated:
    """Run the shop against the server, then the report, and compare the counts (of the sessions simulated: the
    report covers today's sessions of the running experiment, else every session of today)."""
    if sessions < 1:
        raise InvalidInput(f"SESSIONS={sessions}: give at least 1")
    baskets = shop_simulator.load_baskets(data) if data else shop_simulator.sample_baskets(storage)
    prices = dict(experiment_report.feed_prices(storage))
    known = analytics.experiments(storage)
    running = known[0]["name"] if known and known[0].get("running") else None
    # What the log holds before: the comparison is of the report's counts after minus before.
    compact(storage)
    before = shop_simulator.report_cells(experiment_report.compute(storage, experiment_name=running), running)
    progress(f"simulating {sessions:,} sessions from {len(baskets):,} baskets against {server.url}")
    started = time.perf_counter()
    truth = shop_http.run_http(server, baskets, sessions, seed, behaviour, prices=prices, progress=progress)
    progress(f"sent {truth.events:,} events ({truth.resent:,} sent twice) in {time.perf_counter() - started:.0f} s")
    answer = report(storage, running, out=out, progress=progress)
    after = shop_simulator.report_cells(analytics.read_summary(storage) or {}, running)
    seen = _minus(after, before)
    differences = shop_simulator.differences(truth.cells(), seen)
    truth_path = Path(out).with_suffix(".truth.json")
    truth_path.write_text(
        json.dumps(
            {"experiment": running, "truth": truth.cells(), "report": seen, "differences": differences}, indent=2
        ),
        encoding="utf-8",
    )
    return Simulated(truth, answer, differences, truth_path)


def _minus(after: dict, before: dict) -> dict:
    out = {}
    for arm, cell in after.items():
        old = before.get(arm, {})
        diff = {k: (round(v - old.get(k, 0), 2) if k == "revenue" else v - old.get(k, 0)) for k, v in cell.items()}
        if any(diff.values()):
            out[arm] = diff
    return out
