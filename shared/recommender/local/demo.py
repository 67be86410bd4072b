"""`make demo`: a synthetic shop, trained and served from a store of its own, with its web console and its demo shop.

The demo never touches the store the other commands use: it works in `<STORAGE_URL>/demo` (data/demo by default),
so that the user's own `make train` afterwards is compared with nothing of the demo's and `make rollback` never
brings the synthetic model back.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recommender.core.errors import NotFound
from recommender.core.items import ITEMS_FILE, Items
from recommender.core.storage import Storage
from recommender.local.shop import Product, Shop, synthetic_products, write_feed

DEMO_USER = "demo"
DEMO_KEY = "demo-shop"
# Hosts that listen on every address: the browser reaches them at the loopback address.
_ANY_HOST = ("0.0.0.0", "::", "")


def store_url(storage_url: str) -> str:
    """The demo's own store, inside the configured one: `<STORAGE_URL>/demo`."""
    if "://" in storage_url:
        return storage_url.rstrip("/") + "/demo"
    return str(Path(storage_url) / "demo")


def check_ports(host: str, ports: tuple[int, ...]) -> None:
    """ConfigError now, before the training, when the API's or the shop's port is taken."""
    from recommender.core.errors import ConfigError
    from recommender.local.processes import port_open

    for port in ports:
        if port_open(host, port):
            raise ConfigError(
                f"port {port} on {host} is already in use (another server?); set PORT=... (the demo "
                "shop takes PORT + 1)"
            )


def browser_host(host: str) -> str:
    """The host a browser on this machine opens for a server listening on host."""
    return "127.0.0.1" if host in _ANY_HOST else host


def shop_origins(host: str, shop_port: int) -> list[str]:
    """The origins the demo shop's pages have, which its key accepts."""
    shown = browser_host(host)
    names = [shown] + (["localhost"] if shown in ("127.0.0.1", "::1") else [])
    return [f"http://{name}:{shop_port}" for name in names]


@dataclass(frozen=True)
class DemoSite:
    """What `prepare` made: the model version, the demo user's password, the shop's key and catalogue."""

    version: str
    password: str
    key: str
    example: str
    products: list[Product]


def prepare(
    storage: Storage,
    data: Path,
    host: str,
    shop_port: int,
    keep_versions: int = 5,
    bcrypt_rounds: int = 12,
    preset: str = "default",
    progress: Callable[[str], None] | None = None,
) -> DemoSite:
    """Generate the synthetic history at data, train on it, publish the shop's product feed, (re)create the demo
    user and the demo shop's browser key (scopes recommend and events, the shop's origins)."""
    from recommender.serving.keys import add_key, revoke_key
    from recommender.serving.users import add_user, delete_user
    from recommender.tools import synthetic
    from recommender.training.feed import publish_feed
    from recommender.training.pipeline import train
    from recommender.training.recipe import say

    progress = progress or say
    spec = synthetic.preset(preset)
    data.parent.mkdir(parents=True, exist_ok=True)
    summary = synthetic.write_csv(spec, data)
    progress(
        f"demo data: {summary.rows:,} rows, {summary.invoices:,} invoices, {summary.products:,} products in {data}"
    )
    result = train(data, storage, keep_versions=keep_versions, progress=progress)
    items = Items.from_json(storage.read(_items_key(result.version)))
    popular = items.most_popular()
    generated = synthetic.product_arrays(spec)
    prices = {str(c): float(p) for c, p in zip(generated.code, generated.price)}
    products = synthetic_products([items.codes[i] for i in popular], [items.descriptions[i] for i in popular], prices)
    feed = write_feed(products, data.with_name(data.stem + "-feed.csv"))
    publish_feed(storage, feed, keep_versions=keep_versions, progress=lambda _line: None)
    password = secrets.token_urlsafe(12)
    try:
        delete_user(storage, DEMO_USER)
    except NotFound:
        pass
    add_user(storage, DEMO_USER, password, "Demo User", "demo@example.com", rounds=bcrypt_rounds)
    try:
        revoke_key(storage, DEMO_KEY)
    except NotFound:
        pass
    _record, key = add_key(storage, DEMO_KEY, "recommend,events", shop_origins(host, shop_port))
    return DemoSite(result.version, password, key, products[0].code, products)


def _items_key(version: str) -> str:
    from recommender.core import registry

    return registry.artifact_key(version, ITEMS_FILE)


def start_shop(site: DemoSite, host: str, api_port: int, shop_port: int):
    """Serve the demo shop beside the API (a daemon thread); the server."""
    from recommender.local.shop import serve_in_background

    api = f"http://{browser_host(host)}:{api_port}"
    return serve_in_background(Shop(site.products, api, site.key), host, shop_port)
