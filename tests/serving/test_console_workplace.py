"""The merchandiser's pages in a real browser (Debian's Chromium, Playwright) against the real local server: roles,
the Rules page's draft, preview, publish and roll back, a viewer's read-only view, the keyboard-only path, and the
guide's screenshots (docs/images/, rewritten with UPDATE_DOCS_IMAGES=1)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import pytest

from recommender.core import registry
from recommender.core.rules_form import known_from, publish, validate
from recommender.serving.users import add_user
from recommender.training.feed import active_feed, publish_feed
from tests.conftest import ROOT
from tests.serving.test_console_browser import IMAGES, SCREENSHOTS, WAIT_MS, Console, browser, site, swatch  # noqa: F401

pytestmark = pytest.mark.slow
# The guide's screenshots are rewritten only when asked (UPDATE_DOCS_IMAGES=1): a test run leaves the tree clean,
# and its screenshots go with the others to reports/console/.
DOCS_IMAGES = ROOT / "docs" / "images" if os.environ.get("UPDATE_DOCS_IMAGES") else SCREENSHOTS
MERCH, VIEWER, SECRET_WORD = "mia", "vera", "a long enough password"


@pytest.fixture(scope="module")
def people(site):
    """A merchandiser and a viewer in the console's store."""
    add_user(site.storage, MERCH, SECRET_WORD, "Mia Merchant", rounds=4, role="merchandiser")
    add_user(site.storage, VIEWER, SECRET_WORD, "Vera Viewer", rounds=4, role="viewer")
    return site


def _page(browser, site, width: int = 1280, height: int = 900) -> tuple[Console, object]:  # noqa: F811
    context = browser.new_context(viewport={"width": width, "height": height})
    context.route(IMAGES + "**", swatch)
    return Console(context.new_page(), site.base), context


def _signed_in(console: Console, username: str) -> None:
    console.open().sign_in(username, SECRET_WORD)
    console.page.locator("#account-role").filter(has_text=username == MERCH and "merchandiser" or "viewer").wait_for()


def _rules_page(console: Console) -> None:
    console.page.get_by_role("link", name="Rules").click()
    console.page.locator("#rules-status").filter(has_text="rules version").wait_for()


def _token(site, username: str) -> str:
    form = f"username={username}&password={SECRET_WORD.replace(' ', '+')}".encode()
    with urllib.request.urlopen(urllib.request.Request(site.base + "/token", data=form)) as answer:
        return json.load(answer)["access_token"]


def _recommend(site, basket: list[str]) -> list[str]:
    request = urllib.request.Request(
        site.base + "/recommendations",
        data=json.dumps({"product_list": basket, "n": 10}).encode(),
        headers={"Authorization": f"Bearer {_token(site, MERCH)}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as answer:
        return [i["stock_code"] for i in json.load(answer)["items"]]


def _health(site) -> dict:
    request = urllib.request.Request(site.base + "/health", headers={"Authorization": f"Bearer {_token(site, MERCH)}"})
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)


def _until(condition, seconds: float = WAIT_MS / 1000) -> None:
    """Wait for condition() to hold (the page's answers follow the server's within MODEL_POLL_SECONDS)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.2)


def _add_pin(page, basket: str, item: str):
    """A new pin row in the rules form, for this basket and item; the row."""
    page.get_by_role("button", name="Add a pin").click()
    row = page.locator('.rule-rows[data-kind="pin"] .rule-row').last
    row.get_by_label("When the basket holds (code)").fill(basket)
    row.get_by_label("Show (code)").fill(item)
    return row


def test_merchandiser_drafts_previews_publishes_and_rolls_back(browser, people):  # noqa: F811
    site = people
    basket = site.lunch[1]
    answer = _recommend(site, [basket])
    blocked, pinned = answer[0], answer[-1]  # the first pick blocked, the last one pinned first
    console, context = _page(browser, site)
    page = console.page
    try:
        _signed_in(console, MERCH)
        _rules_page(console)
        row = _add_pin(page, basket, pinned)
        row.get_by_label("At position").fill("1")
        page.get_by_label("Products (codes, separated by commas)").fill(blocked)
        page.locator("#rules-check").filter(has_text="Ready to preview").wait_for()
        page.get_by_label("Also preview this basket (codes, separated by commas)").fill(basket)
        page.get_by_role("button", name="Preview").click()
        counts = page.locator("#preview-counts")
        counts.wait_for()
        mine = page.locator(".preview-basket", has=page.get_by_role("heading", name="Your basket"))
        after = mine.locator(".preview-list").nth(1)
        assert after.locator("li").first.locator(".code").inner_text() == pinned
        assert "pinned" in after.locator("li").first.inner_text()
        assert mine.locator(".preview-list").first.locator("li.removed .code").all_inner_texts() == [blocked]
        # The counts are the marks: removed and pinned items over every basket shown, baskets affected.
        text = counts.inner_text()
        removed = page.locator(".preview-list li.removed").count()
        pinned_marks = page.locator(".preview-list li.pinned").count()
        affected = page.locator(".preview-basket").count()
        assert text.startswith(f"{affected} of ") and f"{removed} item" in text and f"{pinned_marks} pinned" in text
        assert removed >= 1 and pinned_marks >= 1
        page.evaluate("document.getElementById('rules-basket').scrollIntoView()")  # the preview under the form
        page.screenshot(path=str(DOCS_IMAGES / "console-rules-1280.png"))

        page.get_by_role("button", name="Publish").click()
        page.locator("#rules-outcome").filter(has_text="answers follow it now").wait_for()
        # The try-out panel follows within MODEL_POLL_SECONDS (1 s here).
        page.get_by_role("link", name="Try it").click()
        console.add_from_search("PARISIENNE JUNGLE LUNCH BOX")
        _until(lambda: (codes := console.rec_codes()) and codes[0] == pinned and blocked not in codes)
        _rules_page(console)
        page.get_by_role("button", name="Roll back").click()
        page.locator("#rules-outcome").filter(has_text="and answers follow it").wait_for()
        page.get_by_role("link", name="Try it").click()
        _until(lambda: (codes := console.rec_codes()) and codes[0] != pinned)
        assert console.dialogs == [] and console.errors == []
    finally:
        context.close()


def test_viewer_sees_nothing_to_change_and_the_api_refuses(browser, people):  # noqa: F811
    site = people
    console, context = _page(browser, site, 390, 844)
    page = console.page
    try:
        _signed_in(console, VIEWER)
        _rules_page(console)
        for name in ("Preview", "Publish", "Roll back", "Add a pin", "Remove"):
            assert page.get_by_role("button", name=name).count() == 0 or not any(
                b.is_visible() for b in page.get_by_role("button", name=name).all()
            ), name
        assert all(field.is_disabled() for field in page.locator("#rules-form input").all() if field.is_visible())
        page.get_by_text("changing them needs a merchandiser or an admin").wait_for()
        page.screenshot(path=str(DOCS_IMAGES / "console-rules-390.png"), full_page=False)
        # Nor on the Product feed and Versions pages.
        for link, title in (("Product feed", "#feed-title"), ("Versions", "#versions-title")):
            page.get_by_role("link", name=link).click()
            page.locator(title).wait_for()
            if link == "Versions":
                page.locator("#versions-status").filter(has_text="in force").wait_for()
            for name in ("Check the file", "Publish", "Roll back", "Promote", "Activate"):
                assert not any(b.is_visible() for b in page.get_by_role("button", name=name).all()), (link, name)
            assert not any(i.is_visible() for i in page.locator("#page-feed input[type=file]").all())
        request = urllib.request.Request(
            site.base + "/rules",
            data=b'{"rules": {}}',
            headers={"Authorization": f"Bearer {_token(site, VIEWER)}", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 403
        assert "the right 'rules'" in json.load(refused.value)["detail"]
    finally:
        context.close()


def test_the_rules_editor_by_keyboard_alone(browser, people):  # noqa: F811
    site = people
    console, context = _page(browser, site)
    page = console.page
    try:
        _signed_in(console, MERCH)

        def tab_to(name: str, limit: int = 80) -> None:
            for _ in range(limit):
                page.keyboard.press("Tab")
                if page.evaluate("() => (document.activeElement.textContent || '').trim()") == name:
                    return
            raise AssertionError(f"{name!r} cannot be reached with Tab")

        tab_to("Rules")
        page.keyboard.press("Enter")
        page.locator("#rules-status").filter(has_text="rules version").wait_for()
        tab_to("Add a pin")
        page.keyboard.press("Enter")
        page.keyboard.type(site.lunch[1])  # the new row's first field has the focus
        page.keyboard.press("Tab")
        page.keyboard.type(site.pinned)
        page.locator("#rules-check").filter(has_text="Ready to preview").wait_for()
        tab_to("Preview")
        page.keyboard.press("Enter")
        page.locator("#preview-counts").wait_for()
        # A mistake is shown at its field, in make rules' words.
        page.keyboard.press("Shift+Tab")
        page.locator('[data-place="pin[1].position"]').focus()
        page.keyboard.press("Control+A")
        page.keyboard.type("0")
        page.locator("#rules-check").filter(has_text="pin[1].position").wait_for()
        assert page.locator('[data-place="pin[1].position"]').get_attribute("aria-invalid") == "true"
        assert page.get_by_role("button", name="Publish").is_disabled()
    finally:
        context.close()


def test_the_rules_as_yaml_checked_as_typed(browser, people):  # noqa: F811
    """The text view is the rules file's YAML: the form's draft written there reads back as the same document, and
    a mistake typed there is shown at its line and at the form's field, in make rules' words."""
    from recommender.core import rules_yaml
    from recommender.core.rules_form import validate

    site = people
    console, context = _page(browser, site)
    page = console.page
    try:
        _signed_in(console, MERCH)
        _rules_page(console)
        _add_pin(page, site.lunch[1], site.pinned)
        page.get_by_label("Products (codes, separated by commas)").fill("yes, 2026-01-02, Home > Kitchen")
        page.locator("#rules-check").filter(has_text="Ready to preview").wait_for()
        page.get_by_text("As text").click()
        area = page.get_by_label("The rules file's content, in YAML as make rules reads it")
        text = area.input_value()
        rules = validate(rules_yaml.load(text, "the text"))  # what make rules would read from it
        pin = {"basket": {"code": [site.lunch[1]]}, "item": {"code": [site.pinned]}, "position": 1}
        assert rules["pin"][-1] == pin
        assert rules["block"]["codes"] == ["yes", "2026-01-02", "Home > Kitchen"]  # quoted where YAML would not
        # A mistake typed in the text: at its line, and at the form's field.
        area.fill(text.replace("position: 1", "position: 0", 1))
        error = page.locator("#rules-text-error")
        error.filter(has_text="must be a whole number from 1 to 100, got 0").wait_for()
        line = 1 + text.splitlines().index("    position: 1")
        assert error.inner_text().startswith(f"Line {line}: ") and area.get_attribute("aria-invalid") == "true"
        field = page.locator(f'[data-place="pin[{len(rules["pin"]) - 1}].position"]')
        assert field.get_attribute("aria-invalid") == "true" and field.input_value() == "0"  # the form follows
        assert page.get_by_role("button", name="Publish").is_disabled()
        area.fill(text.replace("position: 1", "position: [", 1))
        error.filter(has_text="the text is not valid YAML at line").wait_for()
        area.fill(text.replace("position: 1", "position: 2", 1))
        page.locator("#rules-check").filter(has_text="Ready to preview").wait_for()
        assert field.input_value() == "2" and error.inner_text() == ""
        assert console.errors == []
    finally:
        context.close()


def test_promote_refused_by_the_gate_then_forced_by_an_admin(browser, people):  # noqa: F811
    site = people
    active = registry.active_version(site.storage)
    staged = "20990101T000000000Z-deadbeefcafe"  # the active model's files without held-out figures: unmeasurable
    prefix = registry.artifact_key(active, "")
    for key in site.storage.list(prefix):
        data = site.storage.read(key)
        if key.endswith(registry.MANIFEST):
            manifest = json.loads(data)
            manifest.pop("evaluation", None)
            manifest["artifacts"].pop("holdout.json.gz", None)
            data = json.dumps(manifest).encode()
        site.storage.write(registry.artifact_key(staged, key[len(prefix) :]), data)
    registry.stage(site.storage, staged)
    console, context = _page(browser, site)
    page = console.page
    try:
        _signed_in(console, MERCH)
        page.get_by_role("link", name="Versions").click()
        page.get_by_role("button", name="Promote").click()
        page.locator("#gate-outcome.refused").filter(has_text="cannot be measured").wait_for()
        page.get_by_text("Only an admin can activate a model the gate refuses.").wait_for()
        assert page.locator("#gate-force").count() == 0
        page.get_by_role("button", name="Sign out").click()

        console.sign_in()  # alice, an admin
        page.locator("#account-role").filter(has_text="admin").wait_for()
        page.get_by_role("link", name="Versions").click()
        item = page.locator(f'[data-version="{active}"]')
        assert "Quality: Found the bought item in the top 10" in item.inner_text() or "No held-out" in item.inner_text()
        page.get_by_role("button", name="Promote").click()
        page.locator("#gate-outcome.refused").wait_for()
        assert page.get_by_role("button", name="Promote anyway").is_disabled()  # until confirmed
        page.get_by_label("I have read the comparison and want it active anyway").check()
        page.screenshot(path=str(DOCS_IMAGES / "console-versions-1280.png"), full_page=False)
        page.get_by_role("button", name="Promote anyway").click()
        page.locator("#gate-outcome").filter(has_text=f"Promoted model version {staged} is active").wait_for()
        assert registry.active_version(site.storage) == staged
        page.locator("#versions-models").get_by_role("button", name="Roll back").click()
        page.locator("#gate-outcome").filter(has_text=f"model version {active} is active again").wait_for()
        assert registry.active_version(site.storage) == active
    finally:
        context.close()


def test_earlier_feed_and_rules_versions_activated_and_rolled_back(browser, people, tmp_path):  # noqa: F811
    """The Versions page lists the feed and rules versions; a merchandiser activates an earlier one of each, and
    rolls back to the one before, as make feed_rollback and make rules_rollback do."""
    site = people
    rules_before = registry.active_version(site.storage, registry.RULES)
    feed_before = registry.active_version(site.storage, registry.FEED)
    codes = [site.lunch[1], site.pinned]
    for i in range(2):  # two more rules versions, the later in force
        publish(
            site.storage,
            validate({"block": {"codes": [codes[i]]}}),
            b"{}",
            f"rules-{i}.json",
            known_from(codes, {}),
            progress=lambda _m: None,
        )
    older_rules, newer_rules = registry.list_versions(site.storage, registry.RULES)[-2:]
    _, items = active_feed(site.storage)
    feed = tmp_path / "feed.csv"
    feed.write_text("id,availability\n" + "".join(f"{code},in_stock\n" for code in items))
    newer_feed = publish_feed(site.storage, feed, progress=lambda _m: None)["version"]
    console, context = _page(browser, site)
    page = console.page
    try:
        _signed_in(console, MERCH)
        page.get_by_role("link", name="Versions").click()
        rules = page.locator("#versions-rules")
        rules.locator(f'[data-version="{newer_rules}"]').filter(has_text="In force").wait_for()
        assert "from rules-1.json" in rules.locator(f'[data-version="{newer_rules}"]').inner_text()
        rules.locator(f'[data-version="{older_rules}"]').get_by_role("button", name="Activate").click()
        page.locator("#versions-rules-outcome").filter(has_text="answers follow it now").wait_for()
        assert registry.active_version(site.storage, registry.RULES) == older_rules
        rules.get_by_role("button", name="Roll back").click()
        page.locator("#versions-rules-outcome").filter(has_text=f"Rolled back: rules version {newer_rules}").wait_for()
        assert registry.active_version(site.storage, registry.RULES) == newer_rules

        feeds = page.locator("#versions-feeds")
        assert "products" in feeds.locator(f'[data-version="{newer_feed}"]').inner_text()
        feeds.locator(f'[data-version="{feed_before}"]').get_by_role("button", name="Activate").click()
        page.locator("#versions-feed-outcome").filter(has_text="answers follow it now").wait_for()
        assert registry.active_version(site.storage, registry.FEED) == feed_before
        feeds.get_by_role("button", name="Roll back").click()
        page.locator("#versions-feed-outcome").filter(has_text=f"feed version {newer_feed} is in force").wait_for()
        assert registry.active_version(site.storage, registry.FEED) == newer_feed
        assert console.errors == []
    finally:
        context.close()
        # The feed and rules the other tests expect, in force again.
        registry.activate(site.storage, rules_before, kind=registry.RULES, notify=lambda _m: None)
        registry.activate(site.storage, feed_before, kind=registry.FEED, notify=lambda _m: None)
        _until(lambda: (h := _health(site))["rules_version"] == rules_before and h["feed_version"] == feed_before)


def test_a_buried_item_names_its_rule(browser, people):  # noqa: F811
    """The try-out panel names the bury rule behind an item, as it names pins and boosts."""
    site = people
    before = registry.active_version(site.storage, registry.RULES)
    basket = site.lunch[1]
    buried = _recommend(site, [basket])[1]
    version = publish(
        site.storage,
        validate({"bury": [{"code": "NOT-SOLD", "factor": 0.5}, {"code": buried, "factor": 0.95}]}),
        b"{}",
        "bury.json",
        known_from([basket, buried], {}),
        progress=lambda _m: None,
    )["version"]
    console, context = _page(browser, site)
    page = console.page
    try:
        _until(lambda: _health(site)["rules_version"] == version)  # the server follows within MODEL_POLL_SECONDS
        _signed_in(console, MERCH)
        console.add_from_search("PARISIENNE JUNGLE LUNCH BOX")
        row = page.locator("#recs .rec", has=page.locator(".code", has_text=buried))
        row.locator(".reason").filter(has_text=f"Buried ×0.95 by bury rule 2: code {buried}.").wait_for()
        assert console.errors == []
    finally:
        context.close()
        registry.activate(site.storage, before, kind=registry.RULES, notify=lambda _m: None)
        _until(lambda: _health(site)["rules_version"] == before)


def test_feed_upload_with_its_summary_then_the_product_disappears(browser, people, tmp_path):  # noqa: F811
    site = people
    basket = site.lunch[1]
    gone = _recommend(site, [basket])[0]
    _, items = active_feed(site.storage)
    feed = tmp_path / "feed.csv"
    lines = ["id,availability,price"]
    for code, attributes in items.items():
        price = attributes.get("price", 1.0) * (3 if code == basket else 1)  # one price tripled
        lines.append(f"{code},{'out_of_stock' if code == gone else 'in_stock'},{price:.2f} GBP")
    feed.write_text("\n".join(lines) + "\n")
    console, context = _page(browser, site)
    page = console.page
    try:
        _signed_in(console, MERCH)
        page.get_by_role("link", name="Try it").click()
        console.add_from_search("PARISIENNE JUNGLE LUNCH BOX")
        _until(lambda: gone in console.rec_codes())
        page.get_by_role("link", name="Product feed").click()
        page.get_by_label(
            "Feed file (.csv, .tsv, either gzipped, or .xlsx; Google Merchant Center columns)"
        ).set_input_files(str(feed))
        page.get_by_role("button", name="Check the file").click()
        changes = page.get_by_role("list", name="What the file changes")
        changes.wait_for()
        assert changes.locator('[data-change="out of stock"]').inner_text().startswith("1 out of stock")
        assert gone in changes.locator('[data-change="out of stock"]').inner_text()
        assert changes.locator('[data-change="prices changed by more than 20%"]').inner_text().startswith("1 ")
        page.get_by_role("button", name="Publish").click()
        page.locator("#feed-outcome").filter(has_text="answers follow it now").wait_for()
        page.get_by_role("link", name="Try it").click()
        _until(lambda: (codes := console.rec_codes()) and gone not in codes)
        page.get_by_role("link", name="Product feed").click()
        page.get_by_role("button", name="Roll back").click()
        page.locator("#feed-outcome").filter(has_text="and answers follow it").wait_for()
        assert console.errors == []
    finally:
        context.close()


def test_at_390_px_the_first_recommendation_shows_above_the_fold(browser, people):  # noqa: F811
    console, context = _page(browser, people, 390, 844)
    page = console.page
    try:
        _signed_in(console, MERCH)
        console.wait_for_recs(10)
        assert page.locator("#filters").get_attribute("open") is None  # folded into a disclosure
        # With the recommendations card at the top of the screen, its first item shows without scrolling on.
        bottom = page.evaluate("""() => {
            document.getElementById('recs-title').scrollIntoView({block: 'start', behavior: 'instant'});
            return [document.querySelector('#recs .rec').getBoundingClientRect().bottom, window.innerHeight]; }""")
        assert 0 < bottom[0] <= bottom[1], bottom
        page.screenshot(path=str(DOCS_IMAGES / "console-try-390.png"), full_page=False)
    finally:
        context.close()
