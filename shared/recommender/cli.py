"""The command line (`python -m recommender ...`); every make target is a thin wrapper over one of these commands."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from recommender.core import registry
from recommender.core.errors import InvalidInput, PointerDamaged, RecommenderError
from recommender.core.settings import Settings, get_settings
from recommender.core.storage import Storage, open_storage
from recommender.local.emulator import use_dummy_credentials

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {}


def command(*names: str) -> Callable:
    """Register a function as the handler of a sub-command (under each of its names)."""

    def register(fn: Callable[[argparse.Namespace, Settings], int]) -> Callable:
        for name in names:
            COMMANDS[name] = fn
        return fn

    return register


def _password(args: argparse.Namespace) -> str:
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


@command("add-user")
def _add_user(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.serving.users import add_user

    user = add_user(
        open_storage(settings),
        args.username,
        _password(args),
        args.full_name,
        args.email,
        rounds=settings.bcrypt_rounds,
        min_password_length=settings.min_password_length,
    )
    print(f"added user {user.username}")
    return 0


@command("passwd")
def _passwd(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.serving.users import change_password

    user = change_password(
        open_storage(settings),
        args.username,
        _password(args),
        rounds=settings.bcrypt_rounds,
        min_password_length=settings.min_password_length,
    )
    print(
        f"changed the password of {user.username}; tokens issued before stop working within "
        f"{settings.user_cache_seconds:g} s"
    )
    return 0


@command("del-user")
def _del_user(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.serving.users import delete_user

    delete_user(open_storage(settings), args.username)
    print(f"deleted user {args.username}")
    return 0


@command("list-users")
def _list_users(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.serving.users import list_users

    users = list_users(open_storage(settings))
    if not users:
        print("no users yet: add one with `make add_user USER_NAME=... PASSWORD=...`")
    for u in users:
        print(f"{u.username}\t{u.full_name}\t{u.email}\t{u.created_at}")
    return 0


@command("train")
def _train(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training.pipeline import TrainingParams, train

    params = TrainingParams(holdout=None) if args.no_holdout else TrainingParams()
    train(
        args.path,
        open_storage(settings),
        params,
        activate=not args.stage,
        keep_versions=settings.keep_versions,
        engine=args.engine,
        spark_master=args.spark_master,
        force=args.force,
        gate_margin=settings.model_gate_margin,
        encoding=settings.encoding,
        max_memory_gb=settings.max_training_gb,
    )
    return 0


@command("promote")
def _promote(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.core.errors import ModelRefused
    from recommender.training import gate

    storage = open_storage(settings)
    try:
        pointer = registry.staged(storage)
    except PointerDamaged:
        pointer = None  # promote_staged says what is wrong with it
    if pointer is not None:
        try:
            gate.check(storage, pointer.version, args.force, settings.model_gate_margin)
        except ModelRefused as err:
            raise ModelRefused(
                f"{err.message}. It stays staged: `make load_after_parallel_train FORCE=1` activates it anyway"
            ) from None
    version = registry.promote_staged(storage)
    print(f"activated staged version {version}")
    return 0


@command("rollback")
def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    version = registry.rollback(open_storage(settings))
    print(f"re-activated version {version}")
    return 0


@command("versions")
def _versions(args: argparse.Namespace, settings: Settings) -> int:
    storage = open_storage(settings)
    pointers, damaged = {}, []
    for mark, read in (("active", registry.active), ("staged", registry.staged)):
        try:
            pointers[mark] = read(storage)
        except PointerDamaged as err:  # still list the versions: they are what a repair needs
            damaged.append(err.message)
    versions = registry.list_versions(storage)
    if not versions:
        print(f"no model versions in {storage.url}")
    for v in versions:
        marks = [m for m, p in pointers.items() if p and p.version == v]
        marks += filter(None, [registry.version_problem(storage, v)])
        print(v + (f"  ({', '.join(marks)})" if marks else "") + _figures(storage, v))
    for message in damaged:
        print(f"error: {message}", file=sys.stderr)
    return 1 if damaged else 0


def _figures(storage: Storage, version: str) -> str:
    """A version's held-out figures for `versions` ("" when its manifest cannot be read)."""
    from recommender.training.holdout import describe

    try:
        return "  " + describe(registry.read_manifest(storage, version).get("evaluation"))
    except RecommenderError:
        return ""


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


@command("export")
def _export(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.tools import export

    model = export.served_model(open_storage(settings))
    versions = f"model {model.version}, feed {model.feed_version or 'none'}, rules {model.rules_version or 'none'}"
    if args.baskets:
        done = export.answer_baskets(model, args.baskets, args.out, resume=args.resume)
        kept = f", {done.skipped:,} kept from the previous run" if done.skipped else ""
        print(
            f"answered {done.rows:,} line(s) of {args.baskets} into {done.path} in {done.seconds:.1f} s "
            f"({done.errors:,} with an error{kept}; {versions})"
        )
    else:
        done = export.export_complements(model, args.out, args.n, args.format)
        print(
            f"wrote {done.rows:,} rows ({done.items:,} items x top {args.n}) to {done.path} in {done.seconds:.1f} s "
            f"({versions})"
        )
    return 0


@command("generate")
def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.tools import synthetic

    spec = synthetic.preset(args.preset, seed=args.seed)
    summary = synthetic.write_csv(spec, args.path)
    print(f"wrote {summary.rows:,} rows ({summary.invoices:,} invoices, {summary.products:,} products) to {args.path}")
    return 0


@command("serve")
def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.local.server import serve

    serve(settings, Path(args.template))
    return 0


@command("start")
def _start(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.local.server import start

    info = start(settings, Path(args.template))
    print(
        f"server running: pid {info.pid}, http://{info.host}:{info.port} (log: {info.log_file}); `make kill` stops it"
    )
    return 0


@command("stop")
def _stop(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.local.server import stop

    info = stop(settings)
    print(f"stopped server pid {info.pid}; port {info.port} is free" if info else "no background server is running")
    return 0


@command("status")
def _status(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.local.server import health, read_pid_file

    info = read_pid_file(settings)
    if info is None:
        print("no background server is running")
        return 3
    answer = health(info.host, info.port) or {}
    print(
        f"running: pid {info.pid}, http://{info.host}:{info.port}, status {answer.get('status', 'not answering')}, "
        f"model {answer.get('model_version')}, {answer.get('item_count', 0)} items"
    )
    return 0


@command("emulate-s3")
def _emulate_s3(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.local import emulator

    print(emulator.usage(emulator.start(settings, port=args.port)))
    return 0


@command("emulate-s3-stop")
def _emulate_s3_stop(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.local import emulator

    info = emulator.stop(settings)
    print(f"stopped the S3 emulator (pid {info.pid}, {info.endpoint_url})" if info else "no S3 emulator is running")
    return 0


@command("demo")
def _demo(args: argparse.Namespace, settings: Settings) -> int:
    import secrets

    from recommender.core.errors import NotFound
    from recommender.core.items import ITEMS_FILE, Items
    from recommender.local.server import serve
    from recommender.serving.users import add_user, delete_user
    from recommender.tools import synthetic
    from recommender.training.pipeline import train

    base = f"http://{settings.host}:{settings.port}"
    print(f"Web console: {base}/  (sign in as demo with the password printed below, once the server runs)")
    storage = open_storage(settings)
    data = Path(settings.run_dir).parent / "synthetic.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    summary = synthetic.write_csv(synthetic.DEFAULT, data)
    print(f"demo data: {summary.rows:,} rows, {summary.invoices:,} invoices, {summary.products:,} products in {data}")
    result = train(data, storage, keep_versions=settings.keep_versions)
    items = Items.from_json(storage.read(registry.artifact_key(result.version, ITEMS_FILE)))
    example = items.codes[items.most_popular()[0]]
    password = secrets.token_urlsafe(12)
    try:
        delete_user(storage, "demo")
    except NotFound:
        pass
    add_user(storage, "demo", password, "Demo User", "demo@example.com", rounds=settings.bcrypt_rounds)
    print(f"""
Web console: {base}/   user: demo   password: {password}   (shown once; `make demo` again makes a new one)
or from a shell:
  TOKEN=$(curl -s -X POST {base}/token -d username=demo -d 'password={password}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -X POST {base}/send_data -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"product_list": ["{example}"], "n": 5}}'
  or open {base}/docs and press Authorize
""")
    serve(settings, Path(args.template))
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.tools import evaluation

    report, folder = evaluation.run(
        args.path, days=args.days, out_dir=args.out, engine=args.engine, spark_master=args.spark_master
    )
    print()
    print(evaluation.table(report))
    cal = report.product_stats["calibration"]
    print(
        f"\n{report.cases:,} test cases; confidence: ECE {cal['ece']:.4f}, mean predicted {cal['mean_predicted']:.4f} "
        f"against {cal['mean_observed']:.4f} bought, on {cal['observations']:,} recommended items"
    )
    if (folder / "new_products.md").exists():
        print("\n" + (folder / "new_products.md").read_text().rstrip())
    print(f"report, table, HR@k plot and reliability diagram in {folder}/")
    return 0


def _engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=["single", "spark"],
        default="single",
        help='single: this machine (default); spark: a Spark job (README "Training at scale")',
    )
    p.add_argument(
        "--spark-master", help="Spark master for --engine spark (default: $SPARK_MASTER, spark-submit's, else local[*])"
    )


def _feed_commands(sub: argparse._SubParsersAction, prefix: str, listed: bool) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="recommender", description=__doc__)
    parser.add_argument(
        "--storage", help="storage URL: a folder or s3://bucket/prefix (default: $STORAGE_URL or ./data)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("add-user", help="add an API user")
    p.add_argument("username")
    p.add_argument("--full-name", default="")
    p.add_argument("--email", default="")
    p.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from this environment variable (default: prompt, or one line of stdin)",
    )
    p = sub.add_parser("passwd", help="change an API user's password (revokes the tokens issued before)")
    p.add_argument("username")
    p.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from this environment variable (default: prompt, or one line of stdin)",
    )
    p = sub.add_parser("del-user", help="delete an API user")
    p.add_argument("username")
    sub.add_parser("list-users", help="list API users")

    p = sub.add_parser(
        "train", help="train a model on a purchase-history file, folder of parts or s3:// location and activate it"
    )
    p.add_argument("path")
    p.add_argument("--stage", action="store_true", help="stage the new model instead of activating it")
    p.add_argument(
        "--force",
        action="store_true",
        help="activate it even when it is clearly worse than the active model on its held-out baskets",
    )
    p.add_argument(
        "--no-holdout",
        action="store_true",
        help="train on every basket: no held-out figures, calibration or comparison with the active model",
    )
    _engine_arguments(p)
    p = sub.add_parser(
        "promote", help="activate the staged model after verifying it and comparing it with the active one"
    )
    p.add_argument("--force", action="store_true", help="activate it even when it is clearly worse than the active one")
    sub.add_parser("rollback", help="re-activate the previously active model")
    sub.add_parser("versions", help="list model versions")

    for name, text in (
        ("serve", "serve the API in the foreground"),
        ("start", "serve the API in the background (pid and log file)"),
        ("demo", "train on the synthetic data, create a demo user, and serve"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--template", default="template.yaml", help="SAM template whose HttpApi events give the routes")
    sub.add_parser("stop", help="stop the background server")
    sub.add_parser("status", help="say whether the background server runs and which model it serves")

    p = sub.add_parser("evaluate", help="score the product against baselines on the last DAYS days of a file")
    p.add_argument("path")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--out", default="reports", help="folder for the report (JSON, table, PNG plot)")
    _engine_arguments(p)

    p = sub.add_parser(
        "emulate-s3",
        help="run a local S3 (moto's server) on 127.0.0.1 in the background and create the bucket of STORAGE_URL",
    )
    p.add_argument("--port", type=int, help="default: the port of a local AWS_ENDPOINT_URL, else 5055")
    sub.add_parser("emulate-s3-stop", help="stop the local S3 started by emulate-s3 (its content is lost)")

    _feed_commands(sub, "feed", listed=True)
    _feed_commands(sub, "catalog", listed=False)
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

    p = sub.add_parser(
        "export",
        help="write every item's top N complements (csv, jsonl, parquet), or answer a "
        "JSON-lines file of baskets (--baskets)",
    )
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--n", type=int, default=10, help="complements per item (default 10)")
    p.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="default: from the output's file name")
    p.add_argument("--baskets", help='a JSON-lines file: one {"product_list": [...], "n": ..., options} per line')
    p.add_argument("--resume", action="store_true", help="with --baskets: keep the lines OUT already holds")

    p = sub.add_parser("generate", help="write the synthetic demo dataset")
    p.add_argument("path")
    p.add_argument("--preset", default="default", choices=["tiny", "default", "scale"])
    p.add_argument("--seed", type=int, default=0)
    return parser


def run_mapped(run: Callable[[], int]) -> int:
    """Run a command with the one mapping of outcomes: a domain error is one line on stderr and exit status 1, an
    interruption exit status 130."""
    try:
        return run()
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
