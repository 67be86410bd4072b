"""The command line (`python -m recommender ...`); every make target is a thin wrapper over one of these commands."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recommender.core import experiments, registry
from recommender.core.errors import DataFileError, InvalidInput, ModelRefused, PointerDamaged, RecommenderError
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
        role=args.role,
    )
    print(f"added user {user.username} ({user.role})")
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


@command("set-role")
def _set_role(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.serving.users import set_role

    user = set_role(open_storage(settings), args.username, args.role)
    print(f"user {user.username} is now a {user.role}; it applies within {settings.user_cache_seconds:g} s")
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
        print(f"{u.username}\t{u.role}\t{u.full_name}\t{u.email}\t{u.created_at}")
    return 0


@command("add-key")
def _add_key(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.serving.keys import add_key

    rate = settings.key_rate_default if args.rate is None else args.rate
    record, key = add_key(open_storage(settings), args.name, args.scopes, args.origins, rate)
    where = f"browsers on {', '.join(record.origins)}" if record.origins else "servers only (no browser may use it)"
    print(f"added API key {record.name}: scopes {','.join(sorted(record.scopes))}, {where}, {record.rate:g} requests/s")
    print(key)
    print("This key is shown once and never again: only its hash is stored. Keep it now.")
    return 0


@command("keys")
def _keys(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.serving.keys import list_keys

    found = list_keys(open_storage(settings))
    if not found:
        print("no API keys yet: add one with `make add_key NAME=... SCOPES=recommend ORIGINS=https://...`")
    rows = [
        (
            k.name,
            f"{k.prefix}...",
            ",".join(sorted(k.scopes)),
            ",".join(k.origins) or "(server key)",
            f"{k.rate:g}/s",
            k.created_at,
            info.last_used or "never",
        )
        for info in found
        for k in [info.key]
    ]
    if rows:
        rows.insert(0, ("name", "key", "scopes", "origins", "rate", "created", "last used"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


@command("revoke-key")
def _revoke_key(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.serving.keys import revoke_key

    record = revoke_key(open_storage(settings), args.name)
    print(f"revoked API key {record.name}; serving processes refuse it within {settings.model_poll_seconds:g} s")
    return 0


@command("new-secret")
def _new_secret(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.serving.tokens import SECRET_RECHECK_SECONDS, replace_secret

    storage = open_storage(settings)
    done = replace_secret(settings, storage, replace=args.replace)
    print(
        f"{done} the token signing secret in {storage.url}; servers running adopt it within "
        f"{max(settings.user_cache_seconds, SECRET_RECHECK_SECONDS):g} s"
        + ("; every token issued before no longer works: users log in again" if done == "replaced" else "")
    )
    return 0


@command("train")
def _train(args: argparse.Namespace, settings: Settings) -> int:
    if args.engine == "single":
        from recommender.training.xlsx import prefetch

        prefetch(args.path)  # a workbook's parse runs beside the imports below (it releases the GIL)
    from recommender.training.pipeline import TrainingParams, train
    from recommender.training.reranker import RerankParams

    params = TrainingParams(
        holdout=None if args.no_holdout else TrainingParams().holdout, rerank=RerankParams(enabled=args.rerank)
    )
    try:
        _train_with(args, settings, params, train)
    except DataFileError as err:
        hint = _demo_events_hint(settings, "make train PATH_TO_DATA=events:")
        if hint and "events" in args.path and err.message.startswith("no events recorded yet"):
            raise DataFileError(f"{err.message}; {hint}") from None
        raise
    return 0


def _train_with(args: argparse.Namespace, settings: Settings, params: Any, train: Callable[..., Any]) -> None:
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


def _demo_events_hint(settings: Settings, command: str) -> str | None:
    """Where the demo shop's events are, when this store has none and the demo's own store (make demo) has some."""
    from recommender.local.demo import store_url

    if "://" in settings.storage_url or (Path(settings.storage_url) / "events").exists():
        return None
    demo = store_url(settings.storage_url)
    if not (Path(demo) / "events").exists():
        return None
    return f"the demo shop's events are in its own store, {demo}: STORAGE_URL={demo} {command}"


@command("promote")
def _promote(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training import gate

    storage = open_storage(settings)
    try:
        pointer = registry.staged(storage)
    except PointerDamaged:
        pointer = None  # promote_staged says what is wrong with it
    if pointer is not None:
        try:
            gate.check(storage, pointer.version, args.force, settings.model_gate_margin, label="the staged model")
        except ModelRefused as err:
            raise ModelRefused(
                f"{err.message}. It stays staged: `make load_after_parallel_train FORCE=1` activates it anyway"
            ) from None
    version = registry.promote_staged(storage)
    print(f"activated staged version {version}")
    return 0


@command("activate")
def _activate(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training import gate

    storage = open_storage(settings)
    version = registry.find_version(storage, args.version)
    registry.verify(storage, version)  # a damaged version is refused, naming what is damaged
    try:
        pointer = registry.active(storage)
    except PointerDamaged:
        pointer = None  # activating replaces it, and says so
    if pointer is not None and pointer.version == version:
        print(f"version {version} is already active")
        return 0
    try:
        gate.check(storage, version, args.force, settings.model_gate_margin, label="the chosen model")
    except ModelRefused as err:
        raise ModelRefused(
            f"{err.message}. Nothing changed: `make activate VERSION={version} FORCE=1` activates it anyway"
        ) from None
    registry.activate(storage, version)
    unstaged = registry.unstage(storage, version)
    print(f"activated version {version}" + (" (it was staged: nothing is staged now)" if unstaged else ""))
    return 0


@command("rollback")
def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    version = registry.rollback(open_storage(settings))
    print(f"re-activated version {version}")
    return 0


VERSION_COLUMNS = ("VERSION", "STATE", "FILE", "DATES", "ROWS", "PRODUCTS", "HR@10", "ENGINE")


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
    rows, problems = [VERSION_COLUMNS], [""]
    for v in versions:
        marks = [m for m, p in pointers.items() if p and p.version == v]
        rows.append((v, ", ".join(marks) or "-", *_summary(storage, v)))
        problems.append(registry.version_problem(storage, v) or "")
    if versions:
        widths = [max(len(row[i]) for row in rows) for i in range(len(VERSION_COLUMNS))]
        for row, problem in zip(rows, problems):
            print(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                + (f"  {problem}" * bool(problem))
            )
    for message in damaged:
        print(f"error: {message}", file=sys.stderr)
    return 1 if damaged else 0


def _summary(storage: Storage, version: str) -> tuple[str, ...]:
    """A version's cells for `versions` after VERSION and STATE: the training file, its dates, rows, products,
    held-out HR@10 and engine; "-" for what its manifest does not say (older versions, unreadable manifests)."""
    try:
        manifest = registry.read_manifest(storage, version)
    except RecommenderError:
        return ("-",) * (len(VERSION_COLUMNS) - 2)

    def part(*path: str) -> object:
        value: object = manifest
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
        return value

    def number(value: object, form: str = ",") -> str:
        return format(value, form) if isinstance(value, int | float) and not isinstance(value, bool) else "-"

    period = manifest.get("period", {})
    if period is None:
        dates = "undated"
    elif isinstance(period.get("first"), str) and isinstance(period.get("last"), str):
        dates = f"{period['first'][:10]} to {period['last'][:10]}"
    else:
        dates = "-"
    return (
        str(part("source", "file") or "-"),
        dates,
        number(part("counts", "rows_read")),
        number(part("counts", "items")),
        number(part("evaluation", "model", "hr"), ".3f"),
        str(part("engine", "name") or "-"),
    )


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
    import dataclasses

    from recommender.local import demo
    from recommender.local.server import serve

    base = f"http://{settings.host}:{settings.port}"
    shop_port = settings.port + 1
    shop = f"http://{demo.browser_host(settings.host)}:{shop_port}/"
    print(f"Web console: {base}/  (sign in as demo with the password printed below, once the server runs)")
    print(f"Demo shop:   {shop}")
    demo.check_ports(settings.host, (settings.port, shop_port))
    own = demo.store_url(settings.storage_url)
    print(
        f"The demo keeps its model, feed, users, keys and events in its own store, {own}; `make train` and the "
        f"other commands use {settings.storage_url}, which the demo leaves as it is."
    )
    # The served functions read their settings from the environment: they must see the demo's store too.
    os.environ["STORAGE_URL"] = own
    get_settings.cache_clear()
    settings = dataclasses.replace(settings, storage_url=own)
    site = demo.prepare(
        open_storage(settings),
        Path(settings.run_dir).parent / "synthetic.csv",
        settings.host,
        shop_port,
        keep_versions=settings.keep_versions,
        bcrypt_rounds=settings.bcrypt_rounds,
    )
    print(f"""
Web console: {base}/   user: demo   password: {site.password}   (shown once; `make demo` again makes a new one)
             the same password for user merch (a merchandiser) and user viewer (reads only); demo is an admin;
             a second model waits, staged, on the console's Versions page: Promote runs the activation gate
Demo shop:   {shop}   its widget's events go to {own} (commands on them: STORAGE_URL={own} make ...)
or from a shell:
  TOKEN=$(curl -s -X POST {base}/token -d username=demo -d 'password={site.password}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -X POST {base}/send_data -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"product_list": ["{site.example}"], "n": 5}}'
  or open {base}/docs and press Authorize
""")
    demo.start_shop(site, settings.host, settings.port, shop_port)
    serve(settings, Path(args.template))
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.tools import evaluation

    report, folder = evaluation.run(
        args.path, days=args.days, out_dir=args.out, engine=args.engine, spark_master=args.spark_master, seed=args.seed
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


@command("events-compact")
def _events_compact(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.training.event_compaction import compact

    outcome = compact(open_storage(settings))
    for line in outcome.lines():
        print(line)
    hint = _demo_events_hint(settings, "make events_compact")
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


def _analytics_commands(sub: argparse._SubParsersAction) -> None:
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


@command("experiment")
def _experiment(args: argparse.Namespace, settings: Settings) -> int:
    started = experiments.start(open_storage(settings), args.name, experiments.parse_arms(args.arms), args.window_hours)
    print(f"started experiment {started.name} at {started.started_at}:")
    for line in _arm_lines(started):
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
        print("\n".join(_arm_lines(running)))
    for past_one in reversed(past):
        print(f"stopped  {past_one.name}  {past_one.started_at} to {past_one.stopped_at}")
        print("\n".join(_arm_lines(past_one)))
    print(
        "Each answer's recommendation_id names its arm; sessions, answers seen, clicks, purchases and revenue per arm "
        "are counted from the event log by the report."
    )
    return 0


def _arm_lines(experiment: experiments.Experiment) -> list[str]:
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


def _experiment_commands(sub: argparse._SubParsersAction) -> None:
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


def _event_commands(sub: argparse._SubParsersAction) -> None:
    """The event log's commands."""
    sub.add_parser("events-compact", help="compact the recorded events into Parquet by day, duplicates dropped")
    p = sub.add_parser(
        "events-report",
        help="compact, then per day and model version: views, clicks, click-through, add-to-carts, purchases, revenue",
    )
    p.add_argument("--since", help="only days from this one (YYYY-MM-DD, UTC)")
    p.add_argument("--no-compact", action="store_true", help="report on what is compacted already")


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
        "--role",
        default="admin",
        help="admin (default), merchandiser or viewer (docs/console.md says what each may do)",
    )
    p.add_argument(
        "--password-env",
        metavar="VAR",
        help="read the password from this environment variable (default: prompt, or one line of stdin)",
    )
    p = sub.add_parser("set-role", help="give an API user another role: admin, merchandiser or viewer")
    p.add_argument("username")
    p.add_argument("role")
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
    p = sub.add_parser("add-key", help="add an API key and print it (once): scopes, origins (browser key), rate")
    p.add_argument("name")
    p.add_argument("--scopes", default="recommend", help="comma-separated: recommend, events (default: recommend)")
    p.add_argument(
        "--origins",
        default="",
        help="comma-separated origins (https://shop.example.com) a browser key answers; none: a server key",
    )
    p.add_argument("--rate", type=float, help="requests per second per serving process (default: $KEY_RATE_DEFAULT)")
    sub.add_parser("keys", help="list API keys (never the keys themselves)")
    p = sub.add_parser("revoke-key", help="revoke an API key")
    p.add_argument("name")
    p = sub.add_parser("new-secret", help="make the token signing secret a storage lacks (--replace: a new one)")
    p.add_argument(
        "--replace", action="store_true", help="replace the existing one (every token issued before stops working)"
    )

    p = sub.add_parser(
        "train", help="train a model on a purchase-history file, folder of parts or s3:// location and activate it"
    )
    p.add_argument(
        "path", help="a file, folder or s3:// location; events: (the recorded purchases); or orders.csv,events:"
    )
    p.add_argument("--stage", action="store_true", help="stage the new model instead of activating it")
    p.add_argument(
        "--force",
        action="store_true",
        help="activate it even when it is clearly worse than the active model on its held-out baskets",
    )
    p.add_argument(
        "--no-holdout",
        action="store_true",
        help="train on every basket: no held-out figures, calibration or comparison with the active model "
        "(which it then replaces only with --force)",
    )
    p.add_argument(
        "--rerank",
        action="store_true",
        help="also train the learned re-ranker (about 6%% better HR@10 on Online Retail, but some 1.3 ms of CPU "
        "per answer instead of 0.08 ms, and four times the training time)",
    )
    _engine_arguments(p)
    p = sub.add_parser(
        "promote", help="activate the staged model after verifying it and comparing it with the active one"
    )
    p.add_argument("--force", action="store_true", help="activate it even when it is clearly worse than the active one")
    p = sub.add_parser(
        "activate",
        help="activate a stored model version (after verifying it and comparing it with the active one)",
    )
    p.add_argument("version", help="a version as `versions` lists it, or a unique beginning of one")
    p.add_argument("--force", action="store_true", help="activate it even when the comparison refuses it")
    sub.add_parser("rollback", help="re-activate the previously active model")
    sub.add_parser(
        "versions",
        help="list model versions: state, training file, its dates, rows, products, held-out HR@10, engine",
    )

    for name, text in (
        ("serve", "serve the API in the foreground"),
        ("start", "serve the API in the background (pid and log file)"),
        ("demo", "in its own store: train on synthetic data, create a demo user and key, serve with the demo shop"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--template", default="template.yaml", help="SAM template whose HttpApi events give the routes")
    sub.add_parser("stop", help="stop the background server")
    sub.add_parser("status", help="say whether the background server runs and which model it serves")

    p = sub.add_parser("evaluate", help="score the product against baselines on the last DAYS days of a file")
    p.add_argument("path")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--out", default="reports", help="folder for the report (JSON, table, PNG plot)")
    p.add_argument(
        "--seed", type=int, default=0, help="which item of each test basket is hidden (another seed, another)"
    )
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
    _event_commands(sub)
    _analytics_commands(sub)
    _experiment_commands(sub)
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
