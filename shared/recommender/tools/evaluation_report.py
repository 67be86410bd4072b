"""What an evaluation run measured (Report), and how it is shown: the Markdown table and the HR@k and reliability
plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from recommender.tools.evaluation_protocol import CURVE_K, Gain, MethodResult


@dataclass
class Report:
    """Everything one evaluation run measured."""

    seed: int
    dataset: str
    days: int
    cases: int
    validation_cases: int
    train_baskets: int
    train_items: int
    cutoff: str
    ease_lambda: float | None
    ease_validation: dict[str, float]
    results: list[MethodResult]
    product_stats: dict
    created_at: str
    gains: list[Gain] = field(default_factory=list)


def table(report: Report) -> str:
    """The results as a Markdown table, best HR@10 first (with its 95% bootstrap interval), then the relative
    gains with theirs."""
    lines = [
        "| method | HR@10 | 95% interval | MRR@10 | NDCG@10 | coverage | ECE | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(report.results, key=lambda r: -r.hr):
        ece = "-" if r.ece is None else f"{r.ece:.4f}"
        low, high = r.hr_interval or (r.hr, r.hr)
        lines.append(
            f"| {r.name} | {r.hr:.4f} | {low:.4f}-{high:.4f} | {r.mrr:.4f} | {r.ndcg:.4f} | {r.coverage:.3f} | {ece} "
            f"| {r.note} |"
        )
    if report.gains:
        lines += ["", "| relative gain in HR@10 | ratio | 95% interval (paired bootstrap) |", "|---|---|---|"]
        for g in report.gains:
            lines.append(f"| {g.method} over {g.against} | {g.ratio:.3f} | {g.low:.3f}-{g.high:.3f} |")
    return "\n".join(lines)


def plot(report: Report, path: Path) -> None:
    """HR@k for k = 1..20, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ks = range(1, CURVE_K + 1)
    for r in sorted(report.results, key=lambda r: -r.hr):
        ax.plot(ks, r.hr_curve, marker="o", markersize=3, label=f"{r.name} (HR@10 {r.hr:.3f})")
    ax.set_xlabel("k (recommendations shown)")
    ax.set_ylabel("HR@k (hidden item recommended)")
    ax.set_title(f"{report.dataset}: {report.cases:,} test baskets, last {report.days} days")
    ax.set_xticks(list(ks))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(report: Report, path: Path) -> None:
    """The reliability diagram of the product's confidence on the test period: mean predicted against observed
    purchase rate per bin (the diagonal is perfect calibration), with how many items fall in each bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = report.product_stats["calibration"]
    bins = cal["bins"]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 6.5), dpi=120, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o", label="product")
    for b in bins:
        ax.annotate(
            f"{b['count']:,}",
            (b["predicted"], b["observed"]),
            textcoords="offset points",
            xytext=(5, -10),
            fontsize=7,
            color="dimgrey",
        )
    ax.set_ylabel("observed: share bought")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(
        f"{report.dataset}: confidence on the last {report.days} days, ECE {cal['ece']:.3f}\n"
        f"{cal['observations']:,} items for {cal['baskets']:,} test baskets (part asked, the rest bought)",
        fontsize=9,
    )
    hist.bar(
        [(b["low"] + b["high"]) / 2 for b in bins], [b["count"] for b in bins], width=0.09, color="tab:blue", alpha=0.6
    )
    hist.set_xlabel("predicted: confidence of a recommended item")
    hist.set_ylabel("items")
    hist.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
