"""What a benchmark run measures (Options, ScalePlan) and where its Online Retail data lives (BENCH_DATA_DIR).

Every part takes its options from here and never from the runner, which imports the parts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.common import ROOT, shown
from recommender.core.errors import ConfigError

# The one setting for the Online Retail files (UCI, not in the repository): a folder holding both of them.
DATA_DIR_ENV = "BENCH_DATA_DIR"
DEFAULT_DATA_DIR = Path("data") / "datasets"  # relative to the repository root; data/ is gitignored
RETAIL_CSV = "online_retail.csv.gz"
RETAIL_XLSX = "online_retail.xlsx"


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The folder of the benchmark's Online Retail files: $BENCH_DATA_DIR, else data/datasets in the repository."""
    value = (os.environ if environ is None else environ).get(DATA_DIR_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else ROOT / DEFAULT_DATA_DIR


def retail_file(name: str, folder: Path | None = None) -> Path:
    """The Online Retail file `name` in folder (default: data_dir()); ConfigError saying how to provide it."""
    folder = data_dir() if folder is None else folder
    path = folder / name
    if not path.is_file():
        raise ConfigError(
            f"the benchmark needs Online Retail ({name}) in {shown(folder)}/: put it there or set "
            f"{DATA_DIR_ENV}=<folder>"
        )
    return path


@dataclass(frozen=True)
class ScalePlan:
    """The full-size spec and the smaller ones the growth estimate is fitted on."""

    invoices: int
    products: int
    customers: int
    row_fractions: tuple[float, ...] = (0.1, 0.3)  # with all products
    product_fractions: tuple[float, ...] = (0.1, 0.3)  # at row_fractions[-1] of the rows
    days: int = 30
    max_cases: int = 20_000
    latency_baskets: int = 2_000


@dataclass
class Options:
    """How much to measure; quick_options() gives the short smoke-test variant."""

    data_dir: Path = field(default_factory=data_dir)
    template: Path = ROOT / "template.yaml"
    out_dir: Path = ROOT / "bench" / "results"
    cache_dir: Path = ROOT / "data" / "bench"
    train_repeats: int = 3
    serve_seconds: float = 20.0
    serve_rounds: int = 3
    warmup_seconds: float = 3.0
    connections: int = 16
    latency_repeats: int = 3
    cold_repeats: int = 5
    baskets: int = 2000  # baskets timed in-process (Model.recommend, ASGI)
    http_baskets: int = 200_000  # request bodies of the HTTP runs: more than a run sends, so none repeats by design
    cached_baskets: int = 2000  # the extra product run cycling few baskets (answer cache hits)
    scale: ScalePlan = field(default_factory=lambda: ScalePlan(1_000_000, 100_000, 80_000))
    merch_scale_rows: float = 1.0  # share of the scale preset's invoices the merch part's 100k-item model learns from
    logins_seconds: float = 15.0  # each /send_data run of the logins part (quiet, polite burst, flood)
    logins_flood_logins: int = 18  # legitimate logins during the wrong-password flood, one every 2.5 s
    search_products: int = 100_000
    search_repeats: int = 3
    widget_loads: int = 30  # demo shop product pages opened in a new browser context each
    events_seconds: float = 10.0  # the measured POST /events run (after warmup_seconds)
    events_clients: int = 4
    events_rate: float = 2000.0  # events/s of the paced run, whose p99 is held to the target
    report_days: int = 30  # the analytics report's month of generated events ...
    report_sessions: int = 100_000  # ... of this many sessions a day
    quick: bool = False

    @property
    def csv(self) -> Path:
        """Online Retail as csv.gz (ConfigError when absent)."""
        return retail_file(RETAIL_CSV, self.data_dir)

    @property
    def xlsx(self) -> Path:
        """Online Retail as xlsx (ConfigError when absent)."""
        return retail_file(RETAIL_XLSX, self.data_dir)

    @classmethod
    def quick_options(cls, **changes: Any) -> Options:
        """Short runs to check the harness end to end: one training each, 3 s HTTP runs, a 200k-row scale set."""
        base = cls(
            train_repeats=1,
            serve_seconds=3.0,
            serve_rounds=2,
            warmup_seconds=1.0,
            latency_repeats=1,
            cold_repeats=2,
            baskets=500,
            http_baskets=20_000,
            cached_baskets=500,
            scale=ScalePlan(20_000, 5_000, 4_000, max_cases=2_000, latency_baskets=500),
            merch_scale_rows=1.0,
            logins_seconds=3.0,
            logins_flood_logins=4,
            search_products=10_000,
            search_repeats=1,
            widget_loads=3,
            events_seconds=3.0,
            report_days=3,
            report_sessions=2_000,
            out_dir=ROOT / "bench" / "results" / "quick",
            quick=True,
        )
        return replace(base, **changes)


# The Online Retail files each part reads: checked before the first part runs, so a run stops at once.
NEEDS: dict[str, tuple[str, ...]] = {
    "train": ("csv", "xlsx"),
    "serve": ("csv",),
    "cold": ("csv",),
    "merch": ("csv",),
    "logins": ("csv",),
}


def check_data(parts: tuple[str, ...] | list[str], options: Options) -> None:
    """ConfigError naming the first Online Retail file that one of the parts needs and the data folder lacks."""
    for part in parts:
        for attribute in NEEDS.get(part, ()):
            getattr(options, attribute)
