"""The web console in a real browser: headless Chromium (Debian's package) driven by Playwright, against the real
local server (uvicorn over loopback) serving a tiny synthetic model. Screenshots go to reports/console/."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from recommender.core import registry
from recommender.core.storage import LocalStorage
from recommender.local import server
from recommender.serving.model import load_model
from recommender.serving.tokens import issue_token
from recommender.serving.users import add_user
from recommender.training.feed import publish_feed
from recommender.training.pipeline import train
from recommender.training.rules import known_from, publish_rules
from tests.conftest import PASSWORD, ROOT, free_port, start_server

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
]
SCREENSHOTS = ROOT / "reports" / "console"
SECRET = "console-test-secret-" + "x" * 40
HOSTILE = "<img src=x onerror=alert(1)>"
WAIT_MS = 15_000  # generous: other helpers' tests and benchmarks share the two cores


# The feed's categories, by words of the synthetic descriptions (first match wins).
CATEGORIES = (
    ("LUNCH SANDWICH SNACK ICE WATER", "Kitchen > Lunch"),
    ("TEACUP SAUCER BAKING CAKE CUPCAKE", "Kitchen > Baking"),
    ("APRON TOWEL GLOVE HOLDER", "Kitchen > Textiles"),
    ("PLANT WATERING", "Garden"),
    ("LIGHT LIGHTS LANTERN BATTERIES", "Home > Lights"),
    ("GIFT", "Home > Gifts"),
)
IMAGES = "http://127.0.0.1:9/img/"  # never fetched: the browser tests answer these URLs themselves


def category_of(description: str) -> str:
    words = set(description.split())
    return next((name for keys, name in CATEGORIES if words & set(keys.split())), "Home > Decor")


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_csv):
    """The tiny dataset with its best-seller renamed to markup, trained; a product feed (prices, categories, images,
    one item out of stock) and rules (a pin, a boost); a user; and the server `make run-prod` starts."""
    folder = tmp_path_factory.mktemp("console")
    rows = list(csv.DictReader(tiny_csv.open()))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["StockCode"]] = counts.get(row["StockCode"], 0) + 1
    hostile_code = max(counts, key=counts.get)
    for row in rows:
        if row["StockCode"] == hostile_code:
            row["Description"] = HOSTILE
    data = folder / "hostile.csv"
    with data.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    storage = LocalStorage(folder / "data")
    version = train(data, storage, progress=lambda _m: None).version
    add_user(storage, "alice", PASSWORD, "Alice Liddell", "alice@example.com", rounds=4)
    samples = json.loads(storage.read(registry.artifact_key(version, registry.SAMPLES)))["invoices"]

    model = load_model(storage, version)
    code_of = dict(zip(model.items.descriptions, model.items.codes))
    lunch = [code_of["PARISIENNE JUNGLE LUNCH BAG"], code_of["PARISIENNE JUNGLE LUNCH BOX"]]
    out_of_stock = model.recommend(lunch, 1).items[0].item.stock_code  # the model's first pick for that basket
    pinned = code_of["BLUE CHECK NOTEBOOK"]
    price = {row["StockCode"].strip(): row["UnitPrice"] for row in rows}
    feed = folder / "feed.csv"
    with feed.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "availability", "price", "category", "brand", "image_link", "link"])
        for code, description in zip(model.items.codes, model.items.descriptions):
            if code == hostile_code:
                writer.writerow([code, "in_stock", "9.99 GBP", "Kitchen > Baking", HOSTILE, "x", "javascript:alert(1)"])
                continue
            writer.writerow(
                [
                    code,
                    "out_of_stock" if code == out_of_stock else "in_stock",
                    f"{price[code]} GBP",
                    category_of(description),
                    description.split()[0].title(),
                    f"{IMAGES}{code}.svg",
                    f"https://shop.example/p/{code}",
                ]
            )
    feed_version = publish_feed(storage, feed, progress=lambda _m: None)["version"]
    rules = folder / "rules.yaml"
    rules.write_text(
        f"pin:\n  - {{basket: {{code: '{lunch[0]}'}}, item: {{code: '{pinned}'}}, position: 2}}\n"
        "boost:\n  - {category: 'Kitchen > Textiles', factor: 1.5}\n"
    )
    rules_version = publish_rules(storage, rules, known_from(model.items.codes, {}), progress=lambda _m: None)[
        "version"
    ]

    env = {
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "STORAGE_URL": str(storage.root),
        "RUN_DIR": str(folder / "run"),
        "CACHE_DIR": str(folder / "cache"),
        "JWT_SECRET": SECRET,
        "MODEL_POLL_SECONDS": "1",
        "LOG_LEVEL": "warning",
    }
    settings = start_server(env)
    try:
        yield SimpleNamespace(
            base=f"http://127.0.0.1:{settings.port}",
            storage=storage,
            hostile_code=hostile_code,
            samples=samples,
            lunch=lunch,
            out_of_stock=out_of_stock,
            pinned=pinned,
            feed_version=feed_version,
            rules_version=rules_version,
            items=len(model.items),
        )
    finally:
        server.stop(settings)


def swatch(route) -> None:
    """A product image from the feed, drawn here: a square in a colour of its own (no traffic leaves the machine)."""
    hue = sum(route.request.url.encode()) * 37 % 360
    route.fulfill(
        content_type="image/svg+xml",
        body=f'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        f'<rect width="64" height="64" rx="8" fill="hsl({hue},55%,62%)"/></svg>',
    )


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (Playwright's own browser download is not used)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        yield chromium
        chromium.close()


class Console:
    """A page of the console and the dialogs it opened (there must never be one)."""

    def __init__(self, page, base: str) -> None:
        self.page, self.base, self.dialogs, self.errors = page, base, [], []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.set_default_timeout(WAIT_MS)

    def open(self) -> Console:
        self.page.goto(self.base + "/")
        return self

    def sign_in(self, username: str = "alice", password: str = PASSWORD) -> None:
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()

    def recommendations(self):
        return self.page.get_by_role("list", name="Recommendations")

    def search_results(self):
        return self.page.get_by_role("list", name="Search results")

    def basket(self):
        return self.page.get_by_role("list", name="Basket items")

    def rec_codes(self) -> list[str]:
        return self.recommendations().locator(".rec .code").all_inner_texts()

    def wait_for_recs(self, count: int | None = None) -> None:
        items = self.recommendations().locator(".rec")
        if count is None:
            items.first.wait_for()
        else:
            self.page.wait_for_function(
                "n => document.querySelectorAll('#recs .rec').length === n", arg=count, timeout=WAIT_MS
            )

    def settled(self) -> None:
        """Wait until the recommendations answer the basket as it is now (none of its items among them)."""
        self.page.wait_for_function("""() => {
            const basket = [...document.querySelectorAll('#basket .code')].map(e => e.textContent);
            const shown = [...document.querySelectorAll('#recs .rec .code')].map(e => e.textContent);
            return shown.length > 0 && !document.getElementById('recs').hasAttribute('aria-busy')
                && basket.every(c => !shown.includes(c)); }""")

    def add_from_search(self, query: str) -> str:
        """Search, wait for fresh results, add the first one; its code."""
        self.page.get_by_label("Search products").fill(query)
        self.page.wait_for_function(
            "q => document.getElementById('search-status').textContent.length > 0 && "
            "document.getElementById('search').value === q",
            arg=query,
        )
        first = (
            self.search_results()
            .get_by_role("listitem")
            .filter(has=self.page.get_by_role("button", name="Add", exact=True))
            .first
        )
        code = first.locator(".code").inner_text()
        first.get_by_role("button", name="Add", exact=True).click()
        self.basket().locator(".code", has_text=code).wait_for()
        return code


@pytest.fixture
def console(browser, site):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route(IMAGES + "**", swatch)
    page = context.new_page()
    yield Console(page, site.base)
    context.close()


def test_sign_in_refused_then_accepted(console):
    page = console.open().page
    for username, password in (("alice", "wrong password"), ("nobody", "whatever it is")):
        console.sign_in(username, password)
        message = page.locator("#sign-in-message")
        message.filter(has_text="Wrong username or password.").wait_for()
        assert message.inner_text() == "Wrong username or password."  # the same whether the user exists or not
    assert page.get_by_role("list", name="Recommendations").is_hidden()
    with page.expect_response("**/token") as token_response:
        console.sign_in()
    assert token_response.value.status == 200 and token_response.value.headers["cache-control"] == "no-store"
    page.get_by_text("Signed in as").wait_for()
    console.wait_for_recs(10)
    storage = page.evaluate(
        "({local: Object.keys(localStorage), session: sessionStorage.getItem('recommender.token')})"
    )
    assert storage["local"] == [] and storage["session"].count(".") == 2  # a JWT, in sessionStorage only
    assert storage["session"] not in page.url
    loaded = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
    print(f"\nconsole page loaded in {loaded:.0f} ms")
    assert not console.errors and not console.dialogs


def shown_answer(page) -> dict:
    """The API's answer to the request the page last made (taken from its curl command), asked again."""
    command = page.locator("#curl-text").input_value()
    body = json.loads(command.split(" -d '", 1)[1].rsplit("'", 1)[0].replace("'\\''", "'"))
    return page.evaluate(
        """async (body) => (await fetch('recommendations', {method: 'POST', body: JSON.stringify(body),
        headers: {'Content-Type': 'application/json',
                  Authorization: 'Bearer ' + sessionStorage.getItem('recommender.token')}})).json()""",
        body,
    )


def shown(page, part: str) -> list[str]:
    return page.locator(f"#recs .rec {part}").all_inner_texts()


def check_rows_match(page, answer: dict) -> None:
    """Each row shows its item's code, confidence, feed attributes and reason as the API gave them."""
    rows = page.locator("#recs .rec")
    assert rows.count() == len(answer["items"]) > 0
    for i, item in enumerate(answer["items"]):
        row = rows.nth(i)
        assert row.locator(".code").inner_text() == item["stock_code"]
        assert float(row.locator("meter").get_attribute("value")) == pytest.approx(item["confidence"])
        assert f"{round(item['confidence'] * 100)}% confidence" in row.inner_text()
        assert row.locator(".category").inner_text() == item["category"]
        assert row.locator(".price").inner_text() == f"£{item['price']:.2f}"
        assert row.locator("img").get_attribute("src") == item["image_link"]
        reason = row.locator(".reason").inner_text()
        if item["source"] == "model":
            top = max(item["because"], key=lambda b: b["share"])
            n = top["baskets"]
            expected = f"with {top['description']}: bought together in {n:,} basket{'s' * (n != 1)}"
            if all(b["share"] >= 0 for b in item["because"]):  # shares read as parts of the score
                expected += f" ({math.floor(top['share'] * 100 + 0.5)}% of the score)"
            else:
                low = min(item["because"], key=lambda b: b["share"])
                assert (
                    f"less likely because it is rarely bought with {low['description']}: {low['baskets']:,} basket"
                    in reason
                )
            assert expected.lower() in reason.lower(), (expected, reason)
        elif item["source"] == "pinned":
            assert reason.startswith("Pinned by rule 1: with "), reason
        else:
            assert "best-seller" in reason, reason
        if item.get("boost"):
            assert f"Boosted ×{item['boost']:g} by boost rule 1: category Kitchen > Textiles." in reason, reason


def test_basket_recommendations_reasons_filters_curl_and_screenshots(console, site):
    page = console.open().page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.base)
    console.sign_in()
    console.wait_for_recs(10)
    first = console.add_from_search("LUNCH BAG")
    second = console.add_from_search("LUNCH BOX")
    assert [first, second] == site.lunch
    console.settled()
    elapsed = int(page.locator("#recs").get_attribute("data-elapsed-ms"))
    print(f"\nrecommendations with reasons for a two-item basket answered and drawn in {elapsed} ms")
    assert page.get_by_text("2 items in the basket.").is_visible()
    answer = shown_answer(page)
    check_rows_match(page, answer)
    sources = [item["source"] for item in answer["items"]]
    assert sources[1] == "pinned" and answer["items"][1]["stock_code"] == site.pinned and sources.count("model") >= 5
    assert answer["feed_version"] == site.feed_version and answer["rules_version"] == site.rules_version
    before = shown(page, ".code")

    # Filters change them: a category, a price range, one per category, a minimum confidence.
    page.get_by_label("Category", exact=True).select_option(label="Home > Decor")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#recs .rec .category')].every(e => e.textContent === 'Home > Decor')"
    )
    console.settled()
    assert shown(page, ".code") != before and set(shown(page, ".category")) == {"Home > Decor"}
    check_rows_match(page, shown_answer(page))
    page.get_by_label("Category", exact=True).select_option(label="All categories")
    page.get_by_label("Maximum price").fill("1")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#recs .rec .price')].every(e => parseFloat(e.textContent.slice(1)) <= 1)"
    )
    console.settled()
    assert all(float(p[1:]) <= 1 for p in shown(page, ".price")) and shown(page, ".code") != before
    page.get_by_label("Maximum price").fill("")
    page.get_by_label("Most per category").fill("1")
    # (a pinned item keeps its place whatever the filters: a merchandiser's explicit choice)
    page.wait_for_function(
        "() => { const c = [...document.querySelectorAll('#recs .rec')].filter(r => !r.querySelector('.badge.pinned'))"
        ".map(r => r.querySelector('.category').textContent); return c.length > 0 && new Set(c).size === c.length }"
    )
    page.get_by_label("Most per category").fill("")
    page.get_by_label("Minimum confidence (%)").fill("20")
    page.wait_for_function("() => [...document.querySelectorAll('#recs meter')].every(m => Number(m.value) >= 0.2)")
    console.settled()
    assert all(i["confidence"] >= 0.2 for i in shown_answer(page)["items"])  # pins included
    page.get_by_label("Minimum confidence (%)").fill("")

    # A control changes them: fewer items asked for.
    page.get_by_label("Number of items").fill("4")
    console.wait_for_recs(4)

    # Copy as curl copies the exact request.
    page.get_by_role("button", name="Copy as curl").click()
    page.get_by_text("Copied").wait_for()
    command = page.evaluate("navigator.clipboard.readText()")
    body = json.loads(command.split(" -d '", 1)[1].rsplit("'", 1)[0])
    assert body == {"product_list": [first, second], "n": 4, "explain": True}
    assert f"{site.base}/recommendations" in command and "Authorization: Bearer ey" in command

    page.get_by_label("Number of items").fill("10")
    console.wait_for_recs(10)
    console.settled()
    page.evaluate("document.activeElement.blur()")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#recs img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "console-1280.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 800})
    page.screenshot(path=str(SCREENSHOTS / "console-375.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing wider than a phone
    assert not console.errors and not console.dialogs


def test_out_of_stock_item_never_appears(console, site):
    page = console.open().page
    console.sign_in()
    console.wait_for_recs(10)
    page.get_by_label("Number of items").fill("100")  # every eligible item
    page.wait_for_function("n => document.querySelectorAll('#recs .rec').length >= n", arg=site.items - 2)
    assert site.out_of_stock not in shown(page, ".code")
    assert (
        len(shown(page, ".code")) == site.items - 1 and page.get_by_text("no more items pass the filters").is_visible()
    )
    console.add_from_search("LUNCH BAG")
    console.add_from_search("LUNCH BOX")
    console.settled()
    # the model's own first pick for this basket, were it in stock
    assert site.out_of_stock not in shown(page, ".code") and len(shown(page, ".code")) == site.items - 3
    assert "Out of stock" not in shown(page, ".availability")


def test_hostile_description_is_shown_as_text(console, site):
    page = console.open().page
    console.sign_in()
    console.wait_for_recs(10)  # an empty basket gets the best-sellers, the hostile one first
    assert console.recommendations().locator(".rec .desc").first.inner_text() == HOSTILE
    console.add_from_search(site.hostile_code)
    assert console.basket().get_by_text(HOSTILE, exact=True).is_visible()
    page.get_by_label("Search products").fill("")
    assert page.locator("img[src='x'], img[src$='/x']").count() == 0
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert console.dialogs == [] and not console.errors


def test_try_a_real_basket(console, site):
    page = console.open().page
    console.sign_in()
    console.wait_for_recs(10)
    page.get_by_role("button", name="Try a real basket").click()
    page.locator("#basket-status", has_text="Invoice ").wait_for()
    invoice = page.locator("#basket-status").inner_text().split()[1].rstrip(".")
    expected = next(s["items"] for s in site.samples if s["invoice"] == invoice)
    codes = console.basket().locator(".code").all_inner_texts()
    assert sorted(codes) == sorted(expected) and len(codes) >= 2
    page.wait_for_function(
        "codes => { const shown = [...document.querySelectorAll('#recs .rec .code')]"
        ".map(e => e.textContent); return shown.length > 0 && codes.every(c => !shown.includes(c)) }",
        arg=codes,
    )


def test_sign_out_and_expired_token(console):
    page = console.open().page
    console.sign_in()
    console.wait_for_recs(10)
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("You are signed out.").wait_for()
    assert page.evaluate("sessionStorage.length") == 0
    assert console.recommendations().is_hidden()

    console.sign_in()
    console.wait_for_recs(10)
    expired = issue_token("alice", SECRET, minutes=1, clock=lambda: time.time() - 3600)
    page.evaluate("t => sessionStorage.setItem('recommender.token', t)", expired)
    page.reload()  # a tab reopened after the token's lifetime
    page.get_by_text("Your session expired. Please sign in again.").wait_for()
    assert page.get_by_label("Username").is_visible()

    console.sign_in()
    console.wait_for_recs(10)

    # The token expires while the page is open: the next call returns to sign-in. Only the call this
    # test makes (n=3) carries the expired token, so a late call from the sign-in cannot get there first.
    def expire(route):
        if (route.request.post_data_json or {}).get("n") != 3:
            return route.continue_()
        return route.continue_(headers={**route.request.headers, "authorization": f"Bearer {expired}"})

    page.route("**/recommendations", expire)
    page.get_by_label("Number of items").fill("3")
    page.get_by_text("Your session expired. Please sign in again.").wait_for()
    assert page.evaluate("sessionStorage.getItem('recommender.token')") is None


def test_keyboard_only(console):
    page = console.open().page
    keyboard = page.keyboard
    focused = lambda: page.evaluate("document.activeElement.id || document.activeElement.textContent")  # noqa: E731
    assert focused() == "username"
    keyboard.type("alice")
    keyboard.press("Tab")
    keyboard.type(PASSWORD)
    keyboard.press("Enter")
    console.wait_for_recs(10)
    assert focused() == "search"
    keyboard.type("PARISIENNE JUNGLE")
    page.locator("#search-results button").first.wait_for()
    keyboard.press("Tab")
    assert focused() == "Add"
    outline = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement); "
        "return [s.outlineStyle, parseFloat(s.outlineWidth)] })()"
    )
    assert outline[0] != "none" and outline[1] >= 2  # the focus is visible
    keyboard.press("Enter")
    keyboard.press("Enter")  # focus moved on to the next result's Add
    console.basket().get_by_role("listitem").nth(1).wait_for()
    assert console.basket().get_by_role("listitem").count() == 2
    console.settled()
    for _ in range(60):  # on through the page to the recommendations' own buttons
        keyboard.press("Tab")
        if page.evaluate(
            "document.activeElement.closest('#recs') !== null && document.activeElement.tagName === 'BUTTON'"
        ):
            break
    else:
        pytest.fail("the recommendations cannot be reached with Tab")
    keyboard.press("Enter")  # add the first recommendation
    console.basket().get_by_role("listitem").nth(2).wait_for()
    page.locator("#sign-out").focus()
    keyboard.press("Enter")
    page.get_by_text("You are signed out.").wait_for()


def test_model_panel(console, site):
    page = console.open().page
    console.sign_in()
    version = registry.active_version(site.storage)
    manifest = registry.read_manifest(site.storage, version)
    facts = page.locator("#model-facts")
    facts.get_by_text(version).wait_for()
    assert facts.get_by_text(f"{manifest['counts']['items']}", exact=True).is_visible()
    assert facts.get_by_text("calibrated on held-out baskets").is_visible()
    assert page.locator("#model-counts").get_by_text(f"{manifest['counts']['rows_read']:,}", exact=True).is_visible()
    figures = page.locator("#model-evaluation table")
    hr = manifest["evaluation"]["model"]["hr"]
    assert figures.get_by_role("row", name="model").inner_text().split()[1] == f"{hr * 100:.1f}%".replace(".0%", "%")
    assert (
        page.locator("#model-evaluation .quality")
        .inner_text()
        .startswith(f"Found the bought item in the top 10 for {hr * 100:.1f}".removesuffix(".0"))
    )
    assert figures.locator("abbr").first.get_attribute("title").startswith("HR@10")
    versions = page.get_by_role("list", name="Model versions").get_by_role("listitem")
    assert versions.count() == 1 and "(served, active)" in versions.first.inner_text()


def test_errors_in_plain_words(console):
    page = console.open().page
    console.sign_in()
    console.wait_for_recs(10)
    page.get_by_label("Number of items").fill("500")
    alert = page.get_by_role("alert")
    alert.filter(has_text="The request was refused").wait_for()
    assert "n:" in alert.inner_text() and "{" not in alert.inner_text()
    page.get_by_label("Number of items").fill("5")
    console.wait_for_recs(5)
    assert alert.is_hidden()
    page.route("**/recommendations", lambda route: route.abort())
    page.get_by_label("Number of items").fill("6")
    alert.filter(has_text="The server cannot be reached").wait_for()
    page.unroute("**/recommendations")
    page.route("**/model", lambda route: route.fulfill(status=500, body="Traceback (most recent call last): ..."))
    page.get_by_role("button", name="Refresh").click()
    alert.filter(has_text="The server failed (HTTP 500)").wait_for()
    assert "Traceback" not in page.inner_text("body")


def test_accessible_names_and_contrast(console):
    page = console.open().page
    console.sign_in()
    console.wait_for_recs(10)
    console.add_from_search("LUNCH BAG")
    unnamed = page.evaluate("""[...document.querySelectorAll('input, select, textarea, button')]
        .filter(e => e.offsetParent !== null || e.closest('details'))
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML)""")
    assert unnamed == []
    low = page.evaluate(CONTRAST_CHECK)
    assert low == [], low


# Every visible text's colour against the first opaque background behind it: at least 4.5:1 (WCAG AA; 3:1 for
# large or bold large text).
CONTRAST_CHECK = """(() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                                return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = (el) => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
                                  if (c.length === 3 || c[3] === 1) return c.slice(0, 3); } return [255, 255, 255]; };
  const low = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || el.offsetParent === null) continue;
    const style = getComputedStyle(el);
    const a = lum(rgb(style.color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) low.push(`${node.textContent.trim().slice(0, 30)}: ${ratio.toFixed(2)}`);
  }
  return low;
})()"""


def test_screenshots_are_ignored_by_git():
    result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "reports/console/console-1280.png"])
    assert result.returncode == 0


def test_analytics_panel(console, site):
    from recommender.serving import analytics
    from tests.serving.test_analytics import store_summary

    store_summary(site.storage)
    try:
        expected = analytics.answer(site.storage)
        page = console.open().page
        console.sign_in()
        headline = page.locator("#analytics-headline")
        headline.filter(has_text=expected["experiment"]["headline"]).wait_for()
        assert headline.inner_text() == f"exp: {expected['experiment']['headline']}"
        rows = page.locator("#analytics-figures tbody tr")
        assert rows.count() == 2
        last_30 = expected["shop"]["last_30_days"]
        assert rows.nth(1).inner_text().split("\t")[:2] == ["Last 30 days", f"{last_30['sessions']:,}"]
        chart = page.locator("#analytics-chart svg")
        assert chart.locator("polyline").count() == 2  # one line per arm, each over its band
        assert chart.locator("polygon").count() == 2
        assert chart.locator("circle").count() == 4  # two days
        assert page.get_by_role("list", name="Most clicked recommended pairs").inner_text().startswith("A → B")
        assert not page.locator("#analytics-srm").is_visible()
        page.screenshot(path=str(SCREENSHOTS / "analytics.png"), full_page=True)
        assert console.dialogs == [] and console.errors == []
    finally:
        site.storage.delete(analytics.SUMMARY_KEY)
        site.storage.delete(analytics.CURRENT_EXPERIMENT)
