"""What every command module shares: the command registry and the arguments and hints used by more than one."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from recommender.core.errors import InvalidInput
from recommender.core.settings import Settings

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {}


def command(*names: str) -> Callable:
    """Register a function as the handler of a sub-command (under each of its names)."""

    def register(fn: Callable[[argparse.Namespace, Settings], int]) -> Callable:
        for name in names:
            COMMANDS[name] = fn
        return fn

    return register


def password(args: argparse.Namespace) -> str:
    # From an environment variable (what `make add_user PASSWORD=...` uses: no quoting trouble, not in `ps`),
    # else a prompt. Never from argv.
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise InvalidInput(f"no password given: environment variable {args.password_env} is not set")
        return value
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        # One line, without its terminator: "\n", or "\r\n" from Windows tools and some clipboards.
        return line.removesuffix("\n").removesuffix("\r")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise InvalidInput("the two passwords differ")
    return first


def engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=["single", "spark"],
        default="single",
        help="single: this machine (default); spark: a Spark job (docs/scale.md)",
    )
    p.add_argument(
        "--spark-master", help="Spark master for --engine spark (default: $SPARK_MASTER, spark-submit's, else local[*])"
    )


def demo_events_hint(settings: Settings, command: str) -> str | None:
    """Where the demo shop's events are, when this store has none and the demo's own store (make demo) has some."""
    from recommender.local.demo import store_url

    if "://" in settings.storage_url or (Path(settings.storage_url) / "events").exists():
        return None
    demo = store_url(settings.storage_url)
    if not (Path(demo) / "events").exists():
        return None
    return f"the demo shop's events are in its own store, {demo}: STORAGE_URL={demo} {command}"
