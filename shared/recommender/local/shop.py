"""The demo shop `make demo` serves beside the API: a home page, product pages, a cart and a checkout, each with the
widget embedded exactly as a shop would embed it (its script loaded from the API, a browser key bound to the shop's
origin), so that a newcomer sees the strips, clicks, buys, and finds the events in the log.

The shop is a separate origin (the API's port + 1), as a real shop is: the widget's requests are cross-origin, with
the CORS preflights and the key's origin check of production. Product images are drawn here as SVG (nothing is
fetched from the internet). The cart lives in the page's sessionStorage; nothing is stored on the server.
"""

from __future__ import annotations

import hashlib
import html
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

CURRENCY = "GBP"
# The colour words of the synthetic descriptions, drawn in their colour.
COLOURS = {
    "RED": "#c62828",
    "BLUE": "#1565c0",
    "PINK": "#d81b60",
    "GREEN": "#2e7d32",
    "IVORY": "#d8cfa8",
    "BLACK": "#263238",
    "WHITE": "#cfd8dc",
    "YELLOW": "#f9a825",
    "ORANGE": "#ef6c00",
    "PURPLE": "#6a1b9a",
    "GREY": "#78909c",
    "BROWN": "#6d4c41",
    "GOLD": "#c9a227",
    "SILVER": "#9e9e9e",
    "TURQUOISE": "#00897b",
    "LILAC": "#9575cd",
}
LIGHT = {COLOURS[name] for name in ("IVORY", "WHITE", "YELLOW", "SILVER", "GOLD")}
HOME_PRODUCTS = 48


@dataclass(frozen=True)
class Product:
    """One product of the demo shop (and of the product feed the demo publishes)."""

    code: str
    title: str
    price: float
    category: str


def synthetic_products(codes: Iterable[str], descriptions: Iterable[str], prices: dict[str, float]) -> list[Product]:
    """Products for the model's items (in the order given: best-sellers first), titled from their descriptions."""
    products = []
    for code, description in zip(codes, descriptions):
        words = description.split()
        category = words[-1].title() if words else "Gifts"
        products.append(Product(code, description.title(), round(prices.get(code, 1.0), 2), category))
    return products


def write_feed(products: list[Product], path: Path) -> Path:
    """The demo's product feed (csv): title, price, category, availability, and links to the shop's own pages and
    images; relative, so that they resolve against whatever address the shop is opened at."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "title", "price", "category", "availability", "image_link", "link"])
        for p in products:
            writer.writerow(
                [
                    p.code,
                    p.title,
                    f"{p.price:.2f} {CURRENCY}",
                    p.category,
                    "in_stock",
                    image_path(p.code),
                    page_path(p.code),
                ]
            )
    return path


def page_path(code: str) -> str:
    """The product page of a code."""
    return "/p/" + _quote(code)


def image_path(code: str) -> str:
    """The product image of a code."""
    return "/img/" + _quote(code) + ".svg"


def _quote(code: str) -> str:
    from urllib.parse import quote

    return quote(code, safe="")


def image_svg(product: Product) -> bytes:
    """A product picture: a card in the product's colour with its category written on it."""
    words = product.title.upper().split()
    colour = next((COLOURS[w] for w in words if w in COLOURS), None)
    if colour is None:
        hue = int(hashlib.sha256(product.code.encode()).hexdigest()[:4], 16) % 360
        colour = f"hsl({hue},45%,45%)"
    label = html.escape(product.category[:14])
    ink = "#333" if colour in LIGHT else "#fff"  # the word stays readable on a pale card
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300" viewBox="0 0 300 300">'
        f'<rect width="300" height="300" fill="#f4f1ea"/><rect x="40" y="40" width="220" height="220" rx="28" '
        f'fill="{colour}"/><circle cx="150" cy="125" r="42" fill="#fff" fill-opacity=".35"/>'
        f'<text x="150" y="225" text-anchor="middle" font-family="sans-serif" font-size="26" fill="{ink}">{label}</text>'
        "</svg>"
    ).encode()


STYLE = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#222;background:#fbfaf7}
header{display:flex;justify-content:space-between;align-items:center;padding:12px 24px;background:#1f3a5f;color:#fff}
header a{color:#fff;text-decoration:none;font-weight:600}
main{max-width:1100px;margin:0 auto;padding:24px}
.grid{list-style:none;margin:0;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:16px}
.grid a{display:block;color:inherit;text-decoration:none;background:#fff;border:1px solid #ddd;border-radius:8px;padding:8px}
.grid img,.product img{width:100%;height:auto;border-radius:6px}
.product{display:grid;grid-template-columns:minmax(0,320px) 1fr;gap:32px;margin-bottom:32px}
@media (max-width:600px){.product{grid-template-columns:1fr;gap:8px}}
.price{font-weight:700;color:#1a5e20}
button,.button{font:inherit;padding:10px 18px;border-radius:6px;border:0;background:#1f3a5f;color:#fff;cursor:pointer;
  text-decoration:none;display:inline-block}
button:focus-visible,a:focus-visible{outline:3px solid #f9a825;outline-offset:2px}
.strip{margin:32px 0}
.note{color:#555;font-size:14px}
table{border-collapse:collapse;margin:16px 0}td,th{padding:6px 12px;border-bottom:1px solid #ddd;text-align:left}
"""

SCRIPT = """
// The demo shop's own script: the cart (in sessionStorage) and the two events the shop reports itself.
(function () {
  "use strict";
  window.recommender = window.recommender || {q: []};
  function track(type, data) {
    var r = window.recommender;
    if (r.track) r.track(type, data); else r.q.push(["track", type, data]);
  }
  function cart() { try { return JSON.parse(sessionStorage.getItem("shop.cart")) || []; } catch (e) { return []; } }
  function save(items) { sessionStorage.setItem("shop.cart", JSON.stringify(items)); count(); }
  function money(v) { return new Intl.NumberFormat("en-GB", {style: "currency", currency: "GBP"}).format(v); }
  function total(items) { return items.reduce(function (s, i) { return s + i.price * i.quantity; }, 0); }
  function count() {
    var n = cart().reduce(function (s, i) { return s + i.quantity; }, 0), el = document.getElementById("cart-count");
    if (el) el.textContent = String(n);
  }
  function lines(items, into) {
    into.textContent = "";
    items.forEach(function (i) {
      var row = document.createElement("tr");
      [i.title, String(i.quantity), money(i.price * i.quantity)].forEach(function (text) {
        var cell = document.createElement("td"); cell.textContent = text; row.appendChild(cell);
      });
      into.appendChild(row);
    });
  }
  count();
  var add = document.getElementById("add-to-cart");
  if (add) add.addEventListener("click", function () {
    var item = {stock_code: add.dataset.code, title: add.dataset.title, price: Number(add.dataset.price), quantity: 1};
    var items = cart(), found = items.filter(function (i) { return i.stock_code === item.stock_code; })[0];
    if (found) found.quantity += 1; else items.push(item);
    save(items);
    track("add_to_cart", {items: [{stock_code: item.stock_code, quantity: 1, price: item.price}],
                          value: item.price, currency: "GBP"});
    document.getElementById("added").textContent = "Added to your cart.";
  });
  var strip = document.querySelector("[data-recommender][data-from-cart]");
  if (strip) strip.setAttribute("data-basket", cart().map(function (i) { return i.stock_code; }).join(","));
  var table = document.getElementById("cart-lines");
  if (table) {
    var items = cart();
    lines(items, table);
    document.getElementById("cart-total").textContent = money(total(items));
    document.getElementById("cart-empty").hidden = items.length > 0;
  }
  var order = document.getElementById("place-order");
  if (order) order.addEventListener("click", function () {
    var items = cart();
    if (!items.length) return;
    track("purchase", {items: items.map(function (i) {
      return {stock_code: i.stock_code, quantity: i.quantity, price: i.price};
    }), value: Math.round(total(items) * 100) / 100, currency: "GBP"});
    save([]);
    order.disabled = true;
    document.getElementById("done").textContent = "Thank you! Your order is placed.";
  });
})();
"""


class Shop:
    """The shop's pages for a catalogue, embedding the widget from `api` with `key`."""

    def __init__(self, products: list[Product], api: str, key: str) -> None:
        self.products = products
        self.by_code = {p.code: p for p in products}
        self.api, self.key = api.rstrip("/"), key

    def csp(self) -> str:
        """A strict policy: the shop's own files, and the API for the widget's script and requests."""
        return (
            f"default-src 'none'; script-src 'self' {self.api}; connect-src {self.api}; img-src 'self'; "
            "style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )

    def _page(self, title: str, body: str) -> bytes:
        e = html.escape
        return (
            '<!doctype html><html lang="en-GB"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{e(title)} - Demo shop</title><link rel="stylesheet" href="/shop.css"></head><body>'
            '<header><a href="/">Demo shop</a><a href="/cart">Cart (<span id="cart-count">0</span>)</a></header>'
            f"<main>{body}</main>"
            '<script src="/shop.js"></script>'
            f'<script src="{e(self.api)}/widget.js" data-key="{e(self.key)}" async></script></body></html>'
        ).encode()

    @staticmethod
    def _strip(basket: str, title: str, n: int, extra: str = "") -> str:
        e = html.escape
        return (
            f'<div class="strip" data-recommender data-basket="{e(basket)}" data-n="{n}" data-title="{e(title)}"'
            f"{extra}></div>"
        )

    def home(self) -> bytes:
        """Best-sellers from the widget, then the products."""
        e = html.escape
        cards = "".join(
            f'<li><a href="{page_path(p.code)}"><img src="{image_path(p.code)}" alt="" width="300" height="300">'
            f'<span>{e(p.title)}</span><br><span class="price">£{p.price:.2f}</span></a></li>'
            for p in self.products[:HOME_PRODUCTS]
        )
        body = (
            "<h1>Demo shop</h1><p class=note>The strips on these pages are the recommender's widget, loaded from the "
            "API; what you view, click, add to the cart and buy is sent to it as events.</p>"
            + self._strip("", "Popular right now", 6)
            + f'<h2>Products</h2><ul class="grid">{cards}</ul>'
        )
        return self._page("Home", body)

    def product(self, code: str) -> bytes | None:
        """A product page: picture, price, the cart button, and what goes well with it."""
        p = self.by_code.get(code)
        if p is None:
            return None
        e = html.escape
        body = (
            f'<div class="product"><img src="{image_path(p.code)}" alt="{e(p.title)}" width="300" height="300"><div>'
            f'<h1>{e(p.title)}</h1><p class="price">£{p.price:.2f}</p><p>{e(p.category)} · code {e(p.code)}</p>'
            f'<button id="add-to-cart" data-code="{e(p.code)}" data-title="{e(p.title)}" data-price="{p.price:.2f}">'
            'Add to cart</button> <a class="button" href="/cart">Go to the cart</a>'
            '<p id="added" role="status"></p></div></div>' + self._strip(p.code, "Goes well with", 4)
        )
        return self._page(p.title, body)

    def cart(self) -> bytes:
        """The cart (drawn by shop.js from sessionStorage) and what would complete it."""
        body = (
            '<h1>Your cart</h1><p id="cart-empty">Your cart is empty.</p>'
            "<table><thead><tr><th>Product</th><th>Quantity</th><th>Price</th></tr></thead>"
            '<tbody id="cart-lines"></tbody></table><p>Total: <strong id="cart-total"></strong></p>'
            '<a class="button" href="/checkout">Checkout</a>'
            + self._strip("", "Complete your order", 4, " data-from-cart")
        )
        return self._page("Cart", body)

    def checkout(self) -> bytes:
        """The checkout: one button places the order (and sends the purchase)."""
        body = (
            '<h1>Checkout</h1><table><tbody id="cart-lines"></tbody></table>'
            '<p>Total: <strong id="cart-total"></strong></p><p id="cart-empty">Your cart is empty.</p>'
            '<button id="place-order">Place order</button><p id="done" role="status"></p>'
        )
        return self._page("Checkout", body)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of path."""
        page = "text/html; charset=utf-8"
        if path == "/":
            return 200, page, self.home()
        if path == "/cart":
            return 200, page, self.cart()
        if path == "/checkout":
            return 200, page, self.checkout()
        if path == "/shop.css":
            return 200, "text/css; charset=utf-8", STYLE.encode()
        if path == "/shop.js":
            return 200, "text/javascript; charset=utf-8", SCRIPT.encode()
        if path.startswith("/p/"):
            found = self.product(unquote(path[3:]))
            if found is not None:
                return 200, page, found
        if path.startswith("/img/") and path.endswith(".svg"):
            p = self.by_code.get(unquote(path[5:-4]))
            if p is not None:
                return 200, "image/svg+xml", image_svg(p)
        return 404, "text/plain; charset=utf-8", b"no such page in the demo shop\n"


def serve_in_background(shop: Shop, host: str, port: int) -> ThreadingHTTPServer:
    """Serve the shop on host:port from a daemon thread (it ends with the process); the server, to shut down."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "demo-shop"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            status, kind, body = shop.answer(self.path.split("?", 1)[0])
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", shop.csp())
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
            pass  # the API's log is the one to read

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="demo-shop", daemon=True).start()
    return server
