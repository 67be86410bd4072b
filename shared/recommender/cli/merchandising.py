"""Commands on what merchandisers publish: the product feed and the rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recommender.cli.common import command
from recommender.core import registry
from recommender.core.settings import Settings
from recommender.core.storage import open_storage


# The feed commands' earlier names (catalog, catalog-show, catalog-rollback) keep working; they are not listed.
@command("feed", "catalog")
def _feed(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training.feed import FeedLimits, active_model, publish_feed

    storage = open_storage(settings)
    model = active_model(storage)
    publish_feed(
        storage,
        args.path,
        settings.keep_versions,
        known_codes=set(model.codes) if model else None,
        limits=FeedLimits(settings.max_feed_rows, settings.max_feed_bytes, settings.encoding),
    )
    return 0


@command("feed-show", "catalog-show")
def _feed_show(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training.feed import show

    print("\n".join(show(open_storage(settings), args.code)))
    return 0


@command("feed-rollback", "catalog-rollback")
def _feed_rollback(args: argparse.Namespace, settings: Settings) -> int:
    version = registry.rollback(open_storage(settings), registry.FEED)
    print(f"re-activated feed version {version}")
    return 0


@command("rules")
def _rules(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training.feed import active_feed, active_model
    from recommender.training.rules import known_from, publish_rules

    storage = open_storage(settings)
    model = active_model(storage)
    known = known_from(model.codes if model else [], active_feed(storage)[1])
    publish_rules(
        storage,
        args.path,
        known,
        settings.keep_versions,
        max_bytes=settings.max_rules_bytes,
        max_stored_bytes=settings.max_rules_stored_bytes,
    )
    return 0


@command("rules-show")
def _rules_show(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training.rules import show

    print("\n".join(show(open_storage(settings))))
    return 0


@command("rules-schema")
def _rules_schema(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from recommender.training.rules import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(
            f"wrote the rules file's JSON Schema to {args.out} (first line of a rules file: "
            f"# yaml-language-server: $schema={args.out})",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return 0


@command("rules-rollback")
def _rules_rollback(args: argparse.Namespace, settings: Settings) -> int:
    version = registry.rollback(open_storage(settings), registry.RULES)
    print(f"re-activated rules version {version}")
    return 0


def feed_commands(sub: argparse._SubParsersAction, prefix: str, listed: bool) -> None:
    """The feed commands under one prefix: `feed`, or `catalog`, their earlier name, which still works but is not
    listed (a sub-command added without help is left out of the list)."""

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            prefix + name,
            **({"help": text} if listed else {"description": f"the earlier name of `feed{name}`: {text}"}),
        )

    add(
        "",
        "upload a product feed (.csv, .csv.gz, .tsv, .xlsx; Google Merchant Center columns) as a new feed version "
        "and activate it",
    ).add_argument("path")
    add("-show", "print the active product feed, or what is known of one code").add_argument(
        "--code", help="one stock code"
    )
    add("-rollback", "re-activate the feed version active before the current one")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The feed's and the rules' sub-commands."""
    feed_commands(sub, "feed", listed=True)
    feed_commands(sub, "catalog", listed=False)
    p = sub.add_parser("rules", help="upload merchandising rules (YAML), validated in full, and activate them")
    p.add_argument("path")
    sub.add_parser("rules-show", help="print the active merchandising rules")
    sub.add_parser("rules-rollback", help="re-activate the rules version active before the current one")
    p = sub.add_parser(
        "rules-schema",
        help="print the JSON Schema of a rules file (for editors: "
        "# yaml-language-server: $schema=<file>), or write it to --out",
    )
    p.add_argument("--out", help="write it to this file instead of printing it")
