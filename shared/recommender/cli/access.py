"""Commands on who may call the API: users and their roles, API keys, the token signing secret."""

from __future__ import annotations

import argparse

from recommender.cli.common import command, password
from recommender.core.settings import Settings
from recommender.core.storage import open_storage


@command("add-user")
def _add_user(args: argparse.Namespace, settings: Settings) -> int:
    from recommender.serving.users import add_user

    user = add_user(
        open_storage(settings),
        args.username,
        password(args),
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
        password(args),
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The users', keys' and secret's sub-commands."""
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
