"""Commands on what shoppers did: the event log, experiments, the report and the shop simulator."""

from __future__ import annotations

import argparse
import os
import sys

from recommender.cli.common import command, demo_events_hint
from recommender.core import experiments
from recommender.core.settings import Settings
from recommender.core.storage import open_storage


@command("events-compact")
def _events_compact(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training.event_compaction import compact

    outcome = compact(open_storage(settings))
    for line in outcome.lines():
        print(line)
    hint = demo_events_hint(settings, "make events_compact")
    if hint:
        print(f"note: {hint}")
    return 0


@command("events-report")
def _events_report(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.tools.event_report import format_report, report
    from recommender.training.event_compaction import compact

    storage = open_storage(settings)
    if not args.no_compact:
        for line in compact(storage).lines():
            print(line)
        print()
    for line in format_report(report(storage, args.since)):
        print(line)
    return 0


@command("report")
def _report(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.tools.analytics_runs import report, summary_lines

    answer = report(
        open_storage(settings),
        args.experiment,
        args.frm,
        args.to,
        args.out,
        settings.attribution_window_hours,
        not args.no_compact,
    )
    print()
    for line in summary_lines(answer):
        print(line)
    return 0


@command("simulate-shop")
def _simulate_shop(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.tools.analytics_runs import credentials, simulate, summary_lines
    from recommender.tools.shop_http import Server
    from recommender.tools.shop_simulator import Behaviour

    url = args.url or f"http://{settings.host}:{settings.port}"
    headers = credentials(url, os.environ)
    behaviour = Behaviour(
        click=args.click, cart=args.cart, resend=args.resend, drop_arm=args.drop_arm, drop_share=args.drop_share
    )
    done = simulate(
        open_storage(settings), Server(url, headers), args.sessions, args.data, args.seed, behaviour, args.out
    )
    print()
    for line in summary_lines(done.answer):
        print(line)
    print(f"ground truth written to {done.truth_path}")
    if done.differences:
        for line in done.differences:
            print(f"MISMATCH {line}", file=sys.stderr)
        return 1
    print(f"the report's counts equal the simulator's in every cell ({len(done.truth.cells())} arms)")
    return 0


@command("experiment")
def _experiment(args: argparse.Namespace, settings: Settings) -> int:
    started = experiments.start(open_storage(settings), args.name, experiments.parse_arms(args.arms), args.window_hours)
    print(f"started experiment {started.name} at {started.started_at}:")
    for line in arm_lines(started):
        print(line)
    print(
        f"Serving follows within MODEL_POLL_SECONDS ({settings.model_poll_seconds:g} s). Requests giving a session_id "
        "or user_id get their arm (in the recommendation_id); requests giving neither get the active model, no arm."
    )
    return 0


@command("experiments")
def _experiments(args: argparse.Namespace, settings: Settings) -> int:
    storage = open_storage(settings)
    running = experiments.read_current(storage)
    past = experiments.history(storage)
    if running is None and not past:
        print("no experiment has run yet: start one with make experiment NAME=... ARMS='control=popular:10,...'")
        return 0
    if running is not None:
        print(f"running  {running.name}  since {running.started_at}")
        print("\n".join(arm_lines(running)))
    for past_one in reversed(past):
        print(f"stopped  {past_one.name}  {past_one.started_at} to {past_one.stopped_at}")
        print("\n".join(arm_lines(past_one)))
    print(
        "Each answer's recommendation_id names its arm; sessions, answers seen, clicks, purchases and revenue per arm "
        "are counted from the event log by the report."
    )
    return 0


def arm_lines(experiment: experiments.Experiment) -> list[str]:
    """An experiment's arms, aligned, and its attribution window."""
    width = max(len(a.name) for a in experiment.arms)
    lines = [f"  {a.name:<{width}}  {a.share:>3}%  {a.describe()}" for a in experiment.arms]
    return [*lines, f"  attribution window {experiment.attribution_window_hours:g} h"]


@command("experiment-stop")
def _experiment_stop(args: argparse.Namespace, settings: Settings) -> int:
    stopped = experiments.stop(open_storage(settings), args.name)
    when = f" at {stopped.stopped_at}" if stopped is not None else " (its record was damaged and is kept as it was)"
    print(
        f"stopped experiment {args.name}{when}; serving returns to the active model within MODEL_POLL_SECONDS "
        f"({settings.model_poll_seconds:g} s)"
    )
    return 0


def event_commands(sub: argparse._SubParsersAction) -> None:
    """The event log's commands."""
    sub.add_parser("events-compact", help="compact the recorded events into Parquet by day, duplicates dropped")
    p = sub.add_parser(
        "events-report",
        help="compact, then per day and model version: views, clicks, click-through, add-to-carts, purchases, revenue",
    )
    p.add_argument("--since", help="only days from this one (YYYY-MM-DD, UTC)")
    p.add_argument("--no-compact", action="store_true", help="report on what is compacted already")


def analytics_commands(sub: argparse._SubParsersAction) -> None:
    """The report and the shop simulator."""
    p = sub.add_parser("report", help="what the recommendations sell: per arm, against control, with intervals")
    p.add_argument("--experiment", help="the experiment to report (default: the running one, else the latest)")
    p.add_argument("--from", dest="frm", help="first day (YYYY-MM-DD, UTC; default: the experiment's, else 30 days)")
    p.add_argument("--to", help="last day (YYYY-MM-DD, UTC; default: today, or the experiment's end)")
    p.add_argument("--out", default="report.html", help="the HTML report (default report.html)")
    p.add_argument("--no-compact", action="store_true", help="report on what is compacted already")
    p = sub.add_parser("simulate-shop", help="drive a running server as a shop would, then check the report")
    p.add_argument("--sessions", type=int, default=20000)
    p.add_argument("--data", help="transactions file: its last 30 days' invoices (default: the model's samples)")
    p.add_argument("--url", help="the server (default http://HOST:PORT)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--click", type=float, default=0.6, help="a shown item in the real basket is clicked")
    p.add_argument("--cart", type=float, default=0.7, help="a clicked item is added to the cart")
    p.add_argument("--resend", type=float, default=0.02, help="a batch of events is sent again")
    p.add_argument("--drop-arm", help="lose sessions of this arm (a broken split, for the ratio check)")
    p.add_argument("--drop-share", type=float, default=0.0, help="the share of its sessions lost")
    p.add_argument("--out", default="report.html", help="the HTML report; the ground truth goes beside it")


def experiment_commands(sub: argparse._SubParsersAction) -> None:
    """The experiments' commands."""
    p = sub.add_parser("experiment", help="start an experiment: arms serving models, each with a share of shoppers")
    p.add_argument("name", help="the experiment's name (never reused: it seeds the assignment)")
    p.add_argument("arms", help=f"e.g. control=popular:10,a=active:45,b=version:<id>:45 ({experiments.ARMS_SYNTAX})")
    p.add_argument(
        "--window-hours",
        type=float,
        default=experiments.DEFAULT_WINDOW_HOURS,
        help="how long after an answer its items' add-to-carts and purchases count for it "
        f"(default {experiments.DEFAULT_WINDOW_HOURS})",
    )
    sub.add_parser("experiments", help="list the running experiment and the past ones, with their arms")
    p = sub.add_parser("experiment-stop", help="stop the running experiment: serving returns to the active model")
    p.add_argument("name")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The events', experiments' and report's sub-commands."""
    event_commands(sub)
    analytics_commands(sub)
    experiment_commands(sub)
