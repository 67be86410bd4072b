"""The merchandiser's workplace without a browser: roles and rights, rules in force only inside their window, the
preview's marks, a feed uploaded as bytes, the CURRENCY setting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recommender.core import registry
from recommender.core.errors import DataFileError, InvalidInput
from recommender.core.feed_form import FeedLimits
from recommender.core.rules_form import RulesError, known_from, publish, validate
from recommender.core.settings import ConfigError, settings_from_env
from recommender.serving import feed_upload, rules_editor
from recommender.serving.model import ModelHolder
from recommender.serving.users import add_user, get_user, set_role
from recommender.serving.workplace_schemas import RulesCheckOut


def test_roles_and_their_rights(trained_storage):
    user = add_user(trained_storage, "mia", "a long password", rounds=4, role="merchandiser")
    assert user.rights() == ["rules", "feed", "promote"] and not user.may("force")
    assert get_user(trained_storage, "mia").role == "merchandiser"
    assert set_role(trained_storage, "mia", "viewer").rights() == []
    assert get_user(trained_storage, "MIA").role == "viewer"
    with pytest.raises(InvalidInput, match="unknown role 'boss': use one of admin, merchandiser, viewer"):
        set_role(trained_storage, "mia", "boss")
    assert add_user(trained_storage, "old", "a long password", rounds=4).role == "admin"  # the default


def test_a_timed_rule_applies_only_inside_its_window(trained_storage):
    holder = ModelHolder(trained_storage, poll_seconds=0)
    model = holder.refresh()
    basket = [model.items.codes[model.items.most_popular()[0]]]
    plain = [s.item.stock_code for s in model.recommend(basket, 5).items]
    pinned = plain[-1]
    rules = validate(
        {"pin": [{"basket": {"code": basket}, "item": {"code": pinned}, "start": "2030-01-01", "end": "2030-01-03"}]}
    )
    assert rules["pin"][0]["start"] == "2030-01-01T00:00:00Z"
    publish(trained_storage, rules, b"{}", "rules.json", known_from(list(model.items.codes), {}), progress=print)
    clock = {"now": datetime(2029, 12, 31, tzinfo=UTC)}
    holder._merchandiser.clock = lambda: clock["now"]
    first = lambda: holder.refresh().recommend(basket, 5).items[0].item.stock_code  # noqa: E731
    assert first() != pinned  # before its start
    clock["now"] = datetime(2030, 1, 2, 12, tzinfo=UTC)
    assert first() == pinned  # inside the window
    clock["now"] = datetime(2030, 1, 3, tzinfo=UTC)
    assert first() != pinned  # its end is excluded
    # The preview as of a date inside the window marks the pin.
    preview = rules_editor.preview(
        holder,
        trained_storage,
        {"pin": [{"basket": {"code": basket}, "item": {"code": plain[0]}}]},
        [basket],
        datetime(2030, 1, 2, tzinfo=UTC),
        samples=0,
        n=5,
    )
    mine = preview["baskets"][0]
    # Before: the rules in force then pin `pinned` first; after: the draft pins plain[0] first instead.
    assert mine["before"][0]["stock_code"] == pinned and mine["before"][0]["source"] == "pinned"
    assert mine["after"][0]["stock_code"] == plain[0] and mine["after"][0]["change"] == "pinned"
    assert preview["counts"]["affected"] == 1


def test_a_window_must_end_after_it_starts():
    with pytest.raises(RulesError, match=r"pin\[0\]: .*the end .* must come after the start"):
        validate(
            {"pin": [{"basket": {"code": "A"}, "item": {"code": "B"}, "start": "2030-01-02", "end": "2030-01-01"}]}
        )
    with pytest.raises(RulesError, match=r"boost\[0\]\.start: expected a date or time"):
        validate({"boost": [{"code": "A", "factor": 2, "start": "next friday"}]})


def test_compare_marks_and_counts():
    before = [{"stock_code": c, "description": c, "source": "model"} for c in "ABCD"]
    after = [
        {"stock_code": "X", "description": "X", "source": "pinned"},
        {"stock_code": "A", "description": "A", "source": "model"},
        {"stock_code": "C", "description": "C", "source": "model"},
        {"stock_code": "E", "description": "E", "source": "model"},
    ]
    diff = rules_editor.compare(before, after)
    # A and C only slid down under the pin: their order among the items of both answers is the same.
    assert [e["change"] for e in diff["after"]] == ["pinned", "same", "same", "new"]
    assert [e["stock_code"] for e in diff["removed"]] == ["B", "D"]
    assert diff["counts"] == {"removed": 2, "pinned": 1, "moved": 0, "added": 1} and diff["changed"]
    swapped = rules_editor.compare(before, [before[1], before[0], before[2], before[3]])
    assert [e["change"] for e in swapped["after"]][:2] == ["moved", "moved"] and swapped["after"][0]["was"] == 2


def test_a_feed_upload_is_read_without_pandas_and_summarized(trained_storage):
    import gzip

    codes = list(ModelHolder(trained_storage, 0).refresh().items.codes)
    text = "id,availability,price\n" + "\n".join(
        f"{c},{'no' if i == 0 else 'yes'},1.50 GBP" for i, c in enumerate(codes[:3])
    )
    limits = FeedLimits()
    summary = feed_upload.summary(trained_storage, "feed.csv.gz", gzip.compress(text.encode()), limits)
    assert summary["changes"]["added"]["count"] == 3 and summary["changes"]["out_of_stock"]["codes"] == [codes[0]]
    feed_upload.publish_upload(trained_storage, "feed.csv", text.encode(), limits, 5)
    again = feed_upload.summary(
        trained_storage, "f.tsv", text.replace(",", "\t").replace("1.50", "3.50").encode(), limits
    )
    assert again["changes"]["price_changes"]["count"] == 3 and again["changes"]["added"]["count"] == 0
    with pytest.raises(DataFileError, match="line 2: availability 'maybe'"):
        feed_upload.read_upload("f.csv", b"id,availability\nA,maybe\n", limits)
    with pytest.raises(DataFileError, match=r"^cannot read f\.xlsx as \.xlsx: BadZipFile"):
        feed_upload.read_upload("f.xlsx", b"PK", limits)
    assert registry.active(trained_storage, registry.FEED) is not None


def test_currency_setting(trained_storage):
    with pytest.raises(ConfigError, match="CURRENCY must be a three-letter"):
        settings_from_env({"CURRENCY": "pounds"})
    holder = ModelHolder(trained_storage, 0, currency="EUR")
    model = holder.refresh()
    basket = [model.items.codes[0]]
    rules = validate({"block": {"codes": [model.items.codes[1]]}})
    publish(trained_storage, rules, b"{}", "r.json", known_from(list(model.items.codes), {}), progress=print)
    item = holder.refresh().recommend(basket, 3).items[0]
    shown = holder.current().policy.shown(model.items.index[item.item.stock_code])
    assert shown.get("currency") == "EUR" and "price" in shown


def test_rolling_back_the_first_rules_leaves_none(trained_storage):
    from recommender.core.errors import Conflict

    with pytest.raises(Conflict, match="no rules are in force"):
        rules_editor.roll_back(trained_storage)
    publish(trained_storage, validate({"block": {"codes": ["X"]}}), b"{}", "r.json", known_from([], {}), progress=print)
    assert rules_editor.roll_back(trained_storage)["version"] == "none"
    assert registry.active(trained_storage, registry.RULES) is None
    assert rules_editor.current(trained_storage)["version"] is None


def test_the_text_view_is_yaml_checked_as_make_rules_checks_a_file(trained_storage, tmp_path):
    """The console's YAML is read by make rules' reader: the same messages, at their line, numbers as typed."""
    from recommender.training.rules import read_rules

    holder = ModelHolder(trained_storage, poll_seconds=0)
    model = holder.refresh()
    code = model.items.codes[0]
    text = f"pin:\n  - basket: {{code: [{code}]}}\n    item: {{code: {code}}}\n    position: 0\n"
    answer = rules_editor.checked(None, trained_storage, model, text)
    (tmp_path / "rules.yaml").write_text(text)
    with pytest.raises(RulesError) as make_rules:
        read_rules(tmp_path / "rules.yaml")
    assert not answer["ok"] and answer["error"]["place"] == "pin[0].position"
    assert make_rules.value.message == f"rules.yaml: pin[0].position: {answer['error']['message']}"
    assert answer["error"]["line"] == 4 and answer["document"]["pin"][0]["position"] == 0
    broken = rules_editor.checked(None, trained_storage, model, "pin:\n  - basket: {code: [1]\n")
    assert broken["error"]["message"].startswith("the text is not valid YAML at line 3, column 1:")
    assert broken["error"]["line"] == 3 and broken["document"] is None
    # YAML reads any text as some document; one that is not a mapping is refused as make rules refuses it, and no
    # form can be filled from it (the fuzzer's "\U000badb7,Í" had answered 500).
    for scalar in ("\U000badb7,\u00cd", "- a\n- b\n", "12"):
        refused = rules_editor.checked(None, trained_storage, model, scalar)
        assert not refused["ok"] and refused["error"]["place"] == "rules" and refused["document"] is None
        RulesCheckOut.model_validate(refused)
    # A code written as a number is the code as typed (0123 is not 83); the document comes back for the form.
    good = rules_editor.checked(None, trained_storage, model, "block:\n  codes: [0123]\n")
    assert good["ok"] and good["document"]["block"]["codes"] == ["0123"]
    published = rules_editor.publish_draft(trained_storage, model, None, 5, 1 << 20, text="block:\n  codes: [0123]\n")
    version = published["version"]
    assert registry.read_manifest(trained_storage, version, registry.RULES)["source"]["file"] == "console.yaml"
    assert rules_editor.current(trained_storage)["rules"]["block"]["codes"] == ["0123"]


def test_a_spreadsheet_upload_reads_as_make_feed_reads_it(tmp_path):
    """The console takes .xlsx as make feed does (read without openpyxl or calamine): the same feed, the same
    refusals."""
    from datetime import datetime as moment

    from openpyxl import Workbook

    from recommender.training.feed import read_feed

    book = Workbook()
    sheet = book.active
    sheet.append(["id", "Availability", "price", "product_type", "BRAND", "Title", "sale_price_effective_date"])
    sheet.append([85123, "in_stock", "2.55 GBP", "Home > Candles", "Acme", "Heart holder", moment(2026, 12, 5, 18)])
    sheet.append(["71053", "out of stock", 3.39, "Home > Lights", None, None, None])
    sheet.append([22423.0, True, None, None, "Bakers", "  Café «rich» text  ", None])
    sheet["A6"] = "84029G"  # a row left out of the file (5), then one with its first cell only
    path = tmp_path / "feed.xlsx"
    book.save(path)
    limits = FeedLimits(100, 1 << 20, "utf-8")
    with pytest.raises(DataFileError) as gap:
        feed_upload.read_upload("feed.xlsx", path.read_bytes(), limits)
    assert gap.value.message == "feed.xlsx line 5: the stock code is empty; nothing was uploaded"
    with pytest.raises(DataFileError, match=gap.value.message):
        read_feed(path, limits)
    sheet["A5"] = "84029A"
    sheet["A9"] = ""  # trailing empty rows are not products
    book.save(path)
    uploaded = feed_upload.read_upload("feed.xlsx", path.read_bytes(), limits)
    assert uploaded == read_feed(path, limits)
    assert uploaded.items["85123"]["price"] == 2.55 and uploaded.items["71053"]["availability"] == "out_of_stock"
    assert uploaded.items["22423"]["title"] == "Café «rich» text" and uploaded.rows == 5
    # Refusals in make feed's words: a damaged workbook, an unknown type, too many rows, too much XML.
    with pytest.raises(DataFileError, match=r"^cannot read bad\.xlsx as \.xlsx: BadZipFile"):
        feed_upload.read_upload("bad.xlsx", b"not a workbook", limits)
    with pytest.raises(DataFileError, match=r"^unsupported feed file type \.json for f\.json: use .*\.xlsx"):
        feed_upload.read_upload("f.json", b"{}", limits)
    few = FeedLimits(2, 1 << 20, "utf-8")
    with pytest.raises(DataFileError) as over:
        feed_upload.read_upload("feed.xlsx", path.read_bytes(), few)
    with pytest.raises(DataFileError) as also_over:
        read_feed(path, few)
    assert over.value.message == also_over.value.message
    with pytest.raises(DataFileError, match="more than 1,000 bytes of spreadsheet data"):
        feed_upload.read_upload("feed.xlsx", path.read_bytes(), FeedLimits(100, 1000, "utf-8"))
