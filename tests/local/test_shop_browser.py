"""The shop widget in a real browser, on the demo shop: headless Chromium (Debian's package) driven by Playwright,
the API served by the real local server (uvicorn over loopback) from a store `make demo` prepares, the shop on its
own origin as a real shop is. Events are read back from the store's event log."""

from __future__ import annotations

import json
import time
import urllib.request
from types import SimpleNamespace

import pytest

from recommender.core.storage import LocalStorage
from recommender.local import demo, server
from recommender.serving.keys import add_key
from tests.conftest import ROOT, free_port, start_server
from tests.serving.test_console_browser import browser  # noqa: F401 (fixture: one headless Chromium)

pytestmark = pytest.mark.slow

WAIT_MS = 15_000  # generous: other tests and benchmarks share the two cores
STRIP = "[data-recommender]"
SCREENSHOTS = ROOT / "reports" / "shop"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """What `make demo` makes (on the tiny preset, in the demo's own store), the API serving it, and the shop."""
    folder = tmp_path_factory.mktemp("shop")
    api_port, shop_port = free_port(), free_port()
    storage = LocalStorage(folder / "data" / "demo")
    site = demo.prepare(
        storage, folder / "synthetic.csv", "127.0.0.1", shop_port, bcrypt_rounds=4, preset="tiny", progress=lambda _: 0
    )
    # A browser key of another shop: the demo shop's pages may not use it.
    _record, foreign_key = add_key(storage, "elsewhere", "recommend,events", ["https://elsewhere.example"])
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(api_port),
        "STORAGE_URL": str(storage.root),
        "RUN_DIR": str(folder / "run"),
        "CACHE_DIR": str(folder / "cache"),
        "JWT_SECRET": "shop-test-secret-" + "x" * 40,
        "MODEL_POLL_SECONDS": "1",
        "LOG_LEVEL": "warning",
    }
    settings = start_server(env)
    shop_server = demo.start_shop(site, "127.0.0.1", api_port, shop_port)
    try:
        yield SimpleNamespace(
            api=f"http://127.0.0.1:{api_port}",
            base=f"http://127.0.0.1:{shop_port}",
            storage=storage,
            site=site,
            foreign_key=foreign_key,
        )
    finally:
        shop_server.shutdown()
        server.stop(settings)


class Visit:
    """A browser tab on the shop, with the errors its pages raised (there must never be one)."""

    def __init__(self, context, base: str) -> None:
        self.page, self.base, self.errors = context.new_page(), base, []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.set_default_timeout(WAIT_MS)

    def open(self, path: str) -> Visit:
        self.page.goto(self.base + path)
        return self

    def state(self) -> str | None:
        return self.page.locator(STRIP).first.get_attribute("data-state")

    def settled(self) -> str:
        """Wait until the strip has its answer (or has given up); its state."""
        self.page.wait_for_function(
            "s => ['ready', 'empty', 'failed'].includes(document.querySelector(s).dataset.state)", arg=STRIP
        )
        return self.state()


@pytest.fixture
def visit(browser, shop):  # noqa: F811 (the imported fixture)
    # A short window: a strip below the product is not half visible until scrolled to.
    context = browser.new_context(viewport={"width": 1000, "height": 500})
    yield Visit(context, shop.base)
    context.close()


def logged(storage: LocalStorage) -> list[dict]:
    """Every event in the store's raw event log, each event_id once."""
    seen: dict[str, dict] = {}
    for path in sorted((storage.root / "events" / "raw").rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            seen.setdefault(event["event_id"], event)
    return list(seen.values())


def wait_for_events(storage: LocalStorage, session: str, count: int, seconds: float = 15.0) -> list[dict]:
    """The events of one browser session, once there are at least count of them."""
    deadline = time.monotonic() + seconds
    while True:
        found = [e for e in logged(storage) if e["session_id"] == session]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def served_experiment(api: str, name: str | None, seconds: float = 15.0) -> None:
    """Wait until the server's /health names the experiment it serves as `name` (None: none)."""
    deadline = time.monotonic() + seconds
    while True:
        with urllib.request.urlopen(f"{api}/health", timeout=5) as answer:
            health = json.load(answer)
        if (health.get("experiment") or {}).get("name") == name:
            return
        assert time.monotonic() < deadline, health
        time.sleep(0.1)


def test_strip_then_view_click_add_to_cart_purchase_each_recorded_once(visit, shop):
    product = shop.site.products[0]
    page = visit.open(f"/p/{product.code}").page
    assert visit.settled() == "ready"
    strip = page.locator(STRIP)
    # Accessible: a heading naming a list of links, each with an image described by its alt text and a price.
    heading = strip.get_by_role("heading", name="Goes well with")
    assert heading.is_visible()
    links = strip.get_by_role("list").get_by_role("listitem").get_by_role("link")
    assert links.count() == 4
    shown = [links.nth(i).get_attribute("data-code") for i in range(4)]
    titles = {p.code: p for p in shop.site.products}
    for i, code in enumerate(shown):
        assert code != product.code and links.nth(i).get_attribute("href") == f"{shop.base}/p/{code}"
        assert links.nth(i).locator("img").get_attribute("alt") == titles[code].title
        assert links.nth(i).locator(".price").inner_text() == f"£{titles[code].price:.2f}"
    assert page.get_by_role("region", name="Goes well with").count() == 1  # the section is named by its heading
    session = page.evaluate("window.recommender.session")
    page.wait_for_timeout(1500)  # a view would be sent within a second: the strip is not half visible yet
    assert wait_for_events(shop.storage, session, 1, seconds=0) == []

    strip.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelector('[data-recommender]').shadowRoot.querySelectorAll('img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "product-page.png"), full_page=True)
    [view] = wait_for_events(shop.storage, session, 1)
    assert view["type"] == "view" and [i["stock_code"] for i in view["items"]] == shown
    rid = view["recommendation_id"]
    assert rid.startswith("r1.")

    links.nth(1).focus()  # the links take the focus
    assert (
        page.evaluate("document.querySelector('[data-recommender]').shadowRoot.activeElement.dataset.code") == shown[1]
    )
    with page.expect_navigation():
        links.nth(1).click()
    assert page.url == f"{shop.base}/p/{shown[1]}"
    page.get_by_role("button", name="Add to cart").click()
    page.get_by_text("Added to your cart.").wait_for()
    page.goto(shop.base + "/checkout")
    page.get_by_role("button", name="Place order").click()
    page.get_by_text("Thank you! Your order is placed.").wait_for()

    events = wait_for_events(shop.storage, session, 4)
    page.wait_for_timeout(1500)  # nothing more arrives: each was sent once
    events = wait_for_events(shop.storage, session, 5, seconds=0)
    assert sorted(e["type"] for e in events) == ["add_to_cart", "click", "purchase", "view"]
    by_type = {e["type"]: e for e in events}
    price = titles[shown[1]].price
    # Every event names the answer that led to it: the add-to-cart and the purchase too, through the click.
    assert {e["recommendation_id"] for e in events} == {rid}
    assert by_type["click"]["items"] == [{"stock_code": shown[1], "quantity": None, "price": price}]
    assert by_type["add_to_cart"]["items"] == [{"stock_code": shown[1], "quantity": 1, "price": price}]
    assert by_type["purchase"]["items"] == [{"stock_code": shown[1], "quantity": 1, "price": price}]
    assert by_type["purchase"]["value"] == price and by_type["purchase"]["currency"] == "GBP"
    assert {e["source"] for e in events} == {"key:demo-shop"} and all(e["user_id"] is None for e in events)
    assert page.context.cookies() == [] and not visit.errors


def test_dead_api_leaves_the_strip_empty_and_events_are_sent_when_it_is_back(visit, shop):
    page = visit.page
    down = lambda route: route.abort("connectionrefused")  # noqa: E731
    for path in ("/recommendations", "/events"):
        page.route(shop.api + path, down)
    product = shop.site.products[1]
    visit.open(f"/p/{product.code}")
    assert visit.settled() == "failed"
    assert page.evaluate("document.querySelector('[data-recommender]').shadowRoot") is None
    assert page.locator(STRIP).bounding_box()["height"] == 0  # nothing shown, nothing in the way
    page.get_by_role("button", name="Add to cart").click()
    page.get_by_text("Added to your cart.").wait_for()  # the shop works on
    session = page.evaluate("window.recommender.session")
    page.wait_for_timeout(1500)  # sent and failed at least once
    # Left while the API is down: the event waits in the tab's sessionStorage, for the next page to send.
    page.goto(shop.base + "/checkout")
    for path in ("/recommendations", "/events"):
        page.unroute(shop.api + path, down)
    [event] = wait_for_events(shop.storage, session, 1)  # sent from the next page, within seconds
    assert event["type"] == "add_to_cart" and event["items"][0]["stock_code"] == product.code

    page.route(shop.api + "/recommendations", lambda route: route.fulfill(status=503, body="{}"))
    visit.open(f"/p/{product.code}")
    assert visit.settled() == "failed" and not visit.errors


def test_styles_do_not_leak_either_way(visit, shop):
    page = visit.page
    probe = """() => [...document.querySelectorAll('h1, h2, header a, .grid li, .grid a, .price, main')]
        .map(e => { const s = getComputedStyle(e); return [s.color, s.fontSize, s.fontFamily, s.display, s.margin,
        s.padding, s.textDecorationLine, s.listStyleType].join('|') })"""
    page.route(shop.api + "/widget.js", lambda route: route.abort())
    visit.open("/")
    without = page.evaluate(probe)
    page.unroute(shop.api + "/widget.js")
    visit.open("/")
    assert visit.settled() == "ready"
    assert page.evaluate(probe) == without  # the widget's styles change nothing of the page

    hostile = (
        "li { color: rgb(255, 0, 0) !important; list-style: square; } a { text-decoration: line-through; }"
        " h2 { font-size: 60px; } img { border: 9px solid red; } body { color: rgb(0, 0, 255); }"
        f" {STRIP} {{ --rec-price-color: rgb(1, 2, 3); }}"
    )
    # The page's own style sheet (through the CSSOM: the shop's CSP allows no inline <style>).
    page.evaluate(
        "css => { const s = new CSSStyleSheet(); s.replaceSync(css); document.adoptedStyleSheets = [s]; }", hostile
    )
    assert page.evaluate("getComputedStyle(document.querySelector('.grid li')).color") == "rgb(255, 0, 0)"
    inside = page.evaluate("""() => { const root = document.querySelector('[data-recommender]').shadowRoot;
        const s = (q, p) => getComputedStyle(root.querySelector(q))[p];
        return {li: s('li', 'color'), a: s('a', 'textDecorationLine'), h2: s('h2', 'fontSize'),
                img: s('img', 'borderTopWidth'), title: s('.title', 'color'), price: s('.price', 'color')} }""")
    assert inside == {
        "li": "rgb(31, 35, 40)",
        "a": "none",
        "h2": "18px",
        "img": "0px",
        "title": "rgb(31, 35, 40)",
        "price": "rgb(1, 2, 3)",  # what the shop may change, it changes through custom properties
    }
    assert not visit.errors


def test_a_key_of_another_origin_is_refused_by_the_browser(visit, shop):
    page = visit.open("/cart").page
    assert visit.settled() == "ready"  # an empty cart: the best-sellers
    ask = """async (key) => { try {
        const r = await fetch(%r, {method: 'POST', headers: {'Content-Type': 'application/json', 'X-API-Key': key},
                                    body: JSON.stringify({product_list: [], n: 2})});
        return 'HTTP ' + r.status + ' ' + (await r.json()).items.length; } catch (e) { return e.name; } }""" % (
        shop.api + "/recommendations"
    )
    assert page.evaluate(ask, shop.site.key) == "HTTP 200 2"
    assert page.evaluate(ask, shop.foreign_key) == "TypeError"  # refused: the page cannot read an answer
    # A shop's mistakes in track() are warned about in the console, never thrown into its page.
    warnings = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    assert page.evaluate("recommender.track('refund', {items: ['85123A']})") is None
    assert page.evaluate("recommender.track('purchase', {items: []})") is None
    assert len(page.evaluate("recommender.track('purchase', {items: ['85123A'], value: 2.5})")) == 32
    assert len(warnings) == 2 and all(w.startswith("recommender: track(") for w in warnings)
    assert not visit.errors


def test_the_strip_is_answered_with_the_shoppers_experiment_arm(visit, shop):
    from recommender.core import experiments
    from recommender.serving.attribution import parse_recommendation_id

    experiment = experiments.start(shop.storage, "widget-arms", experiments.parse_arms("a=active:50,b=popular:50"))
    try:
        served_experiment(shop.api, "widget-arms")  # the running server has picked it up (MODEL_POLL_SECONDS: 1)
        page = visit.open(f"/p/{shop.site.products[0].code}").page
        assert visit.settled() == "ready"
        session = page.evaluate("window.recommender.session")
        page.locator(STRIP).scroll_into_view_if_needed()
        [view] = wait_for_events(shop.storage, session, 1)
        # The widget sent its session id with the request: the answer's arm is the session's.
        assert parse_recommendation_id(view["recommendation_id"]).arm == experiments.assign(experiment, session)
    finally:
        experiments.stop(shop.storage, "widget-arms")
        served_experiment(shop.api, None)  # the other tests see the server without the experiment
