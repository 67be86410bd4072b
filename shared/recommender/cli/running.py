"""Commands that run things locally: the server, the demo, the S3 emulator."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from recommender.cli.common import command
from recommender.core.settings import Settings, get_settings
from recommender.core.storage import open_storage


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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The server's, the demo's and the S3 emulator's sub-commands."""
    for name, text in (
        ("serve", "serve the API in the foreground"),
        ("start", "serve the API in the background (pid and log file)"),
        ("demo", "in its own store: train on synthetic data, create a demo user and key, serve with the demo shop"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--template", default="template.yaml", help="SAM template whose HttpApi events give the routes")
    sub.add_parser("stop", help="stop the background server")
    sub.add_parser("status", help="say whether the background server runs and which model it serves")

    p = sub.add_parser(
        "emulate-s3",
        help="run a local S3 (moto's server) on 127.0.0.1 in the background and create the bucket of STORAGE_URL",
    )
    p.add_argument("--port", type=int, help="default: the port of a local AWS_ENDPOINT_URL, else 5055")
    sub.add_parser("emulate-s3-stop", help="stop the local S3 started by emulate-s3 (its content is lost)")
