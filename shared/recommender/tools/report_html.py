"""The analytics report as one self-contained HTML file (make report): the headline, the shop's figures, each arm
against control with its intervals, the split check, and a PNG chart per metric (each day, each arm, with its 95%
interval) inlined as data: URIs. Charts need matplotlib (the dev install); without it the report says so."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from recommender.serving import experiment_stats as st

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d2733}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}.headline{font-size:1.25em;padding:.8em 1em;
background:#eef5ff;border-left:4px solid #2a6fd6}.broken{background:#fff0f0;border-color:#c62828;font-weight:600}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.3em .7em;border-bottom:1px solid #dde3ea;
text-align:right}th:first-child,td:first-child{text-align:left}.win{color:#1b7d32}.lose{color:#c62828}
.muted{color:#66707c}img{max-width:100%;display:block;margin:.5em 0 1.5em}
"""


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _metric(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric in ("click_through", "add_to_cart_rate", "conversion_rate"):
        return f"{value:.2%}"
    return f"{value:,.2f}"


def _figures_table(rows: list[tuple[str, dict]]) -> str:
    head = ["", "sessions", "answers", "impressions", "clicks", "add-to-carts", "purchases", "revenue"]
    head += [st.METRICS[m][0] for m in st.METRICS]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for name, f in rows:
        cells = [html.escape(name)] + [
            _number(f[k]) for k in ("sessions", "answers", "impressions", "clicks", "add_to_carts", "purchases")
        ]
        cells.append(_number(f["revenue"]))
        for m in st.METRICS:
            low, high = f.get(f"{m}_low"), f.get(f"{m}_high")
            span = f' <span class="muted">({_metric(m, low)} to {_metric(m, high)})</span>' if low is not None else ""
            cells.append(_metric(m, f[m]) + span)
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _comparisons_table(comparisons: list[dict]) -> str:
    head = ["arm vs control", "metric", "difference", "95% interval", "always-valid interval", "more sessions"]
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for c in comparisons:
        if c["lift"] is None:
            continue
        tone = "win" if c["significant"] and c["lift"] > 0 else "lose" if c["significant"] else ""
        fixed = f"{st.percent(c['low'])} to {st.percent(c['high'])}" if c["low"] is not None else "-"
        seq = (
            f"{st.percent(c['sequential_low'])} to {st.percent(c['sequential_high'])}"
            if c["sequential_low"] is not None
            else "-"
        )
        more = _number(c["sessions_needed"]) if c["sessions_needed"] else "-"
        out.append(
            f"<tr><td>{html.escape(c['arm'])} vs {html.escape(c['control'])}</td>"
            f"<td>{st.METRICS[c['metric']][0]}</td><td class='{tone}'>{st.percent(c['lift'])}</td>"
            f"<td>{fixed}</td><td>{seq}</td><td>{more}</td></tr>"
        )
    return "\n".join(out) + "</table>"


def chart_png(experiment: dict, metric: str) -> bytes | None:
    """A PNG of the metric per day per arm with its 95% interval; None without matplotlib or days."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    days = experiment.get("days") or []
    if not days:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    for arm in [a["name"] for a in experiment["arms"]]:
        xs, ys, lo, hi = [], [], [], []
        for d in days:
            f = d["arms"].get(arm)
            if f and f[metric] is not None:
                xs.append(d["day"][5:])
                ys.append(f[metric])
                lo.append(f[f"{metric}_low"] if f[f"{metric}_low"] is not None else f[metric])
                hi.append(f[f"{metric}_high"] if f[f"{metric}_high"] is not None else f[metric])
        if xs:
            (line,) = ax.plot(xs, ys, marker="o", label=arm)
            ax.fill_between(xs, lo, hi, alpha=0.18, color=line.get_color())
    ax.set_title(f"{st.METRICS[metric][0]} per day (95% interval)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def render(answer: dict, charts: bool = True) -> str:
    """The report page from the /analytics answer (serving.analytics.build)."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Recommendations: what they sell</title>",
        f"<style>{STYLE}</style></head><body><h1>What the recommendations sell</h1>",
    ]
    exp = answer.get("experiment")
    if answer.get("computed_at") is None:
        parts.append(f"<p class='headline'>{html.escape(answer.get('message') or 'no data')}</p></body></html>")
        return "\n".join(parts)
    if exp:
        broken = exp["sample_ratio"] and exp["sample_ratio"]["broken"]
        parts.append(f"<p class='headline{' broken' if broken else ''}'>{html.escape(exp['headline'])}</p>")
        parts += [f"<p class='headline broken'>{html.escape(w)}</p>" for w in exp.get("warnings", [])]
    parts.append(
        f"<p class='muted'>Sessions whose first answer came from {answer['first_day']} to {answer['last_day']} (UTC); "
        f"purchases attributed within {answer['window_hours']:g} hours of an answer that showed the item; "
        f"computed {html.escape(answer['computed_at'])}.</p>"
    )
    parts.append("<h2>The shop</h2>")
    parts.append(_figures_table([(k.replace("_", " "), v) for k, v in answer["shop"].items()]))
    if exp:
        state = "running" if exp["running"] else f"stopped {exp.get('stopped_at')}"
        parts.append(
            f"<h2>Experiment {html.escape(exp['name'])} <span class='muted'>(started {exp['started_at']}, "
            f"{state}; control: {html.escape(str(exp['control']))})</span></h2>"
        )
        parts.append(_figures_table([(a["name"], a["figures"]) for a in exp["arms"]]))
        parts.append(_comparisons_table(exp["comparisons"]))
        srm = exp.get("sample_ratio")
        if srm:
            observed = ", ".join(f"{k} {v:,}" for k, v in srm["observed"].items())
            expected = ", ".join(f"{k} {v:,.0f}" for k, v in srm["expected"].items())
            verdict = "BROKEN: do not trust these results" if srm["broken"] else "as configured"
            parts.append(
                f"<p class='{'headline broken' if srm['broken'] else 'muted'}'>Split check: sessions {observed}; "
                f"expected {expected}; chi-square {srm['chi2']:.2f}, p = {srm['p_value']:.3g}: {verdict}.</p>"
            )
        if charts:
            images = [(m, chart_png(exp, m)) for m in st.METRICS]
            if all(png is None for _, png in images):
                parts.append("<p class='muted'>Charts need matplotlib (make devel installs it).</p>")
            for metric, png in images:
                if png:
                    data = base64.b64encode(png).decode()
                    parts.append(f"<img alt='{st.METRICS[metric][0]} per day' src='data:image/png;base64,{data}'>")
    if answer.get("pairs"):
        parts.append("<h2>Most clicked recommended pairs</h2><table><tr><th>in the basket</th><th>clicked</th>")
        parts.append("<th>sessions</th></tr>")
        for p in answer["pairs"]:
            parts.append(
                f"<tr><td>{html.escape(p['held'])}</td><td>{html.escape(p['clicked'])}</td><td>{p['sessions']:,}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
