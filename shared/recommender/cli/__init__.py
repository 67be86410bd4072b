"""The command line (`python -m recommender ...`); every make target is a thin wrapper over one of these commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from recommender.cli import access, events, merchandising, models, running, tools
from recommender.cli.common import COMMANDS
from recommender.core.errors import ModelRefused, RecommenderError
from recommender.core.settings import get_settings
from recommender.local.emulator import use_dummy_credentials

__all__ = ["build_parser", "main", "run_mapped"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="recommender", description=__doc__)
    parser.add_argument(
        "--storage", help="storage URL: a folder or s3://bucket/prefix (default: $STORAGE_URL or ./data)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in (access, models, running, merchandising, tools, events):
        area.add_parsers(sub)
    return parser


def run_mapped(run: Callable[[], int]) -> int:
    """Run a command with the one mapping of outcomes: a domain error is one line on stderr and exit status 1, a
    model the activation gate refused exit status 3 (it is staged or stays where it was), an interruption 130."""
    try:
        return run()
    except ModelRefused as err:
        # The model was made and kept (staged); a script tells this from a failure by the exit status.
        print(err.message, file=sys.stderr)
        return ModelRefused.EXIT_CODE
    except RecommenderError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; domain errors become one line on stderr and exit status 1."""
    args = build_parser().parse_args(argv)

    def chosen() -> int:
        if args.storage:
            # Through the environment, so the apps served by `serve` see the same storage as this command.
            os.environ["STORAGE_URL"] = args.storage
            get_settings.cache_clear()
        # Through the environment too, so servers started from here and boto3 itself see them.
        use_dummy_credentials(os.environ)
        return COMMANDS[args.command](args, get_settings())

    return run_mapped(chosen)


if __name__ == "__main__":
    sys.exit(main())
