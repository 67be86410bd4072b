"""GET /analytics and the report's figures: the shop's last 7 and 30 days, an experiment's arms against control with
their intervals, the sample-ratio check and the headline sentence, the most clicked recommended pairs.

The recommend function cannot run the report's SQL (no DuckDB in serving): `make report` (tools/experiment_report.py)
stores the per-day sums it computed as analytics/summary.json, and this module turns them into figures
(serving.experiment_stats) for any span of days, so that the answer is as fresh as the last report.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

from recommender.core import registry
from recommender.core.errors import NotFound, RecommenderError
from recommender.core.experiments import CURRENT as CURRENT_EXPERIMENT
from recommender.core.experiments import HISTORY as EXPERIMENT_HISTORY
from recommender.core.storage import Storage
from recommender.serving import experiment_stats as st

SUMMARY_KEY = "analytics/summary.json"


def experiments(storage: Storage) -> list[dict]:
    """The running experiment (first, "running": true) and the stopped ones, newest first."""
    found = []
    try:
        current = json.loads(storage.read(CURRENT_EXPERIMENT))
        found.append({**current, "running": True})
    except NotFound:
        pass
    except (RecommenderError, ValueError):
        pass  # a damaged pointer reads as none; the experiments commands say what is wrong with it
    stopped = []
    for key in storage.list(EXPERIMENT_HISTORY):
        try:
            stopped.append({**json.loads(storage.read(key)), "running": False})
        except (RecommenderError, ValueError):
            continue
    stopped.sort(key=lambda e: str(e.get("started_at", "")), reverse=True)
    return found + [e for e in stopped if not found or e.get("name") != found[0].get("name")]


def arm_warnings(storage: Storage, experiment: dict | None) -> list[str]:
    """What keeps a running experiment's arms from serving their model (each such arm serves the active model)."""
    if experiment is None or not experiment.get("running"):
        return []
    out = []
    for arm in experiment.get("arms") or []:
        try:
            if arm.get("kind") == "staged":
                pointer = registry.staged(storage)
                version = pointer.version if pointer is not None else None
                if version is None:
                    out.append(f"arm {arm['name']}: nothing is staged, so it serves the active model")
                    continue
            elif arm.get("kind") == "version":
                version = arm.get("version") or ""
            else:
                continue
            problem = (
                registry.version_problem(storage, version)
                if version in registry.list_versions(storage)
                else ("missing")
            )
        except RecommenderError as err:
            problem = err.message
        if problem is not None:
            out.append(f"arm {arm['name']}: model version {version} is {problem}, so it serves the active model")
    return out


def read_summary(storage: Storage) -> dict | None:
    """The last report's summary, or None before the first report."""
    try:
        return json.loads(storage.read(SUMMARY_KEY))
    except NotFound:
        return None


def _sum(groups: list[dict], keep) -> st.Sums:
    total = st.Sums()
    for group in groups:
        if keep(group):
            total.add(st.Sums.from_row(group))
    return total


def _control(arms: list[dict]) -> str:
    """The control arm: the one named control, else the popular baseline, else the first."""
    names = [a["name"] for a in arms]
    if "control" in names:
        return "control"
    popular = [a["name"] for a in arms if a.get("kind") == "popular"]
    return popular[0] if popular else names[0]


def experiment_figures(experiment: dict, groups: list[dict], warnings: list[str] = ()) -> dict:
    """An experiment's arms, each against control, the split check, the days, and its headline."""
    name = experiment["name"]
    mine = [g for g in groups if g.get("experiment") == name]
    arms = experiment.get("arms") or []
    arm_names = [a["name"] for a in arms] or sorted({g["arm"] for g in mine if g.get("arm")})
    if not arms:
        arms = [{"name": a} for a in arm_names]
    sums = {a: _sum(mine, lambda g, a=a: g.get("arm") == a) for a in arm_names}
    shares = {a["name"]: float(a.get("share") or 0) for a in arms}
    total_share = sum(shares.values()) or 1.0
    srm = st.sample_ratio({a: s.sessions for a, s in sums.items()}, shares) if any(shares.values()) else None
    control = _control(arms) if arms else None
    comparisons = []
    for arm in arm_names:
        if arm == control:
            continue
        pair = (shares.get(control, 0) / total_share, shares.get(arm, 0) / total_share)
        for metric in st.METRICS:
            comparisons.append(st.compare(sums[control], sums[arm], metric, control, arm, pair))
    primary = [c for c in comparisons if c.metric == st.PRIMARY]
    # The headline speaks of the arm with the clearest result on revenue per session.
    lead = max(primary, key=lambda c: abs(c.lift or 0) if c.significant else -1, default=None)
    days = sorted({g["day"] for g in mine})
    return {
        "name": name,
        "running": bool(experiment.get("running")),
        "started_at": experiment.get("started_at"),
        "stopped_at": experiment.get("stopped_at"),
        "control": control,
        "arms": [
            {
                "name": a["name"],
                "kind": a.get("kind"),
                "version": a.get("version"),
                "share": a.get("share"),
                "figures": st.figures(sums[a["name"]]),
            }
            for a in arms
            if a["name"] in sums
        ],
        "comparisons": [c.as_dict() for c in comparisons],
        "sample_ratio": None if srm is None else srm.as_dict(),
        "headline": st.headline(lead, srm),
        "warnings": list(warnings),
        "days": [
            {
                "day": day,
                "arms": {
                    a: st.figures(_sum(mine, lambda g, a=a, d=day: g.get("arm") == a and g["day"] == d))
                    for a in arm_names
                },
            }
            for day in days
        ],
    }


def build(
    summary: dict | None, known: list[dict], today: date, experiment: str | None = None, storage: Storage | None = None
) -> dict:
    """The /analytics answer: shop figures of the last 7 and 30 days (to today), the experiment (the named one,
    else the running one, else the latest), the most clicked pairs."""
    chosen = None
    if experiment:
        chosen = next((e for e in known if e.get("name") == experiment), None)
        if chosen is None:
            raise NotFound(f"no experiment named {experiment!r}")
    elif known:
        chosen = known[0]
    if summary is None:
        return {
            "computed_at": None,
            "first_day": None,
            "last_day": None,
            "window_hours": None,
            "message": "no report yet: run make report (it compacts the recorded events and computes these figures)",
            "shop": {},
            "experiment": None,
            "pairs": [],
        }
    groups = summary.get("groups", [])
    shop = {}
    for days in (7, 30):
        first = (today - timedelta(days=days - 1)).isoformat()
        shop[f"last_{days}_days"] = st.figures(_sum(groups, lambda g, first=first: g["day"] >= first))
    return {
        "computed_at": summary.get("computed_at"),
        "first_day": summary.get("from"),
        "last_day": summary.get("to"),
        "window_hours": summary.get("window_hours"),
        "message": None,
        "shop": shop,
        "experiment": None
        if chosen is None
        else experiment_figures(chosen, groups, arm_warnings(storage, chosen) if storage is not None else []),
        "pairs": summary.get("pairs", []),
    }


def answer(storage: Storage, experiment: str | None = None, now: datetime | None = None) -> dict:
    """GET /analytics from the stored summary and the experiments in storage."""
    now = now or datetime.now(UTC)
    return build(read_summary(storage), experiments(storage), now.date(), experiment, storage)
