"""make export: a row per item and rank in every format, feed and rules applied, formulas neutralized, versions
recorded; a baskets file answered in order with per-line errors, and resumed after a killed run."""

import csv
import io
import json
from contextlib import redirect_stdout

import pyarrow.parquet as pq
import pytest

from recommender import cli
from recommender.core import registry
from recommender.tools import export
from recommender.training.feed import publish_feed


@pytest.fixture
def served(trained_storage, tmp_path):
    """The tiny model with a feed: the most popular item out of stock, another one with a formula as category."""
    plain = export.served_model(trained_storage)
    top = plain.items.codes[plain.items.most_popular()[0]]
    tricky = plain.items.codes[plain.items.most_popular()[1]]
    feed = tmp_path / "feed.csv"
    feed.write_text(f'id,availability,category\n{top},out_of_stock,Home\n{tricky},in_stock,"=HYPERLINK(""x"")"\n')
    publish_feed(trained_storage, feed, progress=lambda _m: None)
    return export.served_model(trained_storage), top, tricky


def test_neutralize():
    assert [export.neutralize(v) for v in ("=1+1", "+A", "-2", "@SUM", "\tx", "ok", "", 3.5, None)] == [
        "'=1+1",
        "'+A",
        "'-2",
        "'@SUM",
        "'\tx",
        "ok",
        "",
        3.5,
        None,
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_row_per_item_and_rank(served, tmp_path, fmt):
    model, top, tricky = served
    out = tmp_path / f"fbt.{fmt}"
    done = export.export_complements(model, out, n=5, progress=False)
    items = len(model.items)
    if fmt == "csv":
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == list(export.COLUMNS)
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        table = pq.read_table(out)
        assert table.schema.metadata[b"model_version"].decode() == model.version
        assert table.schema.metadata[b"feed_version"].decode() == model.feed_version
        rows = table.to_pylist()
    assert done.rows == len(rows) == items * 5 and done.items == items
    assert {r["item_code"] for r in rows} == set(model.items.codes)
    assert [int(r["rank"]) for r in rows[:5]] == [1, 2, 3, 4, 5]
    assert all(r["stock_code"] != top for r in rows), "an out-of-stock item was exported as a complement"
    assert {r["model_version"] for r in rows} == {model.version} and {r["feed_version"] for r in rows} == {
        model.feed_version
    }
    model_rows = [r for r in rows if r["source"] == "model" and r["reason_code"]]
    assert model_rows and all(
        r["reason_code"] == r["item_code"] and float(r["reason_share"]) == 1.0 for r in model_rows
    )
    categories = {r["category"] for r in rows if r["stock_code"] == tricky}
    assert categories == ({'=HYPERLINK("x")'} if fmt == "jsonl" else {'\'=HYPERLINK("x")'})


def test_baskets_file_in_order_with_errors_then_resumed(served, tmp_path):
    model, top, _tricky = served
    code = model.items.codes[0]
    lines = [
        json.dumps({"product_list": [code], "n": 3}),
        "{not json",
        json.dumps({"product_list": [code], "n": 2, "price_min": 5, "price_max": 1}),
        "",
        json.dumps({"product_list": [], "n": 4, "exclude": [top]}),
        json.dumps({"product_list": [code], "n": 3, "explain": False}),
    ]
    baskets = tmp_path / "baskets.jsonl"
    baskets.write_text("\n".join(lines) + "\n")
    out = tmp_path / "answers.jsonl"
    done = export.answer_baskets(model, baskets, out, progress=False)
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert done.rows == 6 and done.errors == 3 and [a["line"] for a in answers] == [1, 2, 3, 4, 5, 6]
    assert len(answers[0]["items"]) == 3 and answers[0]["items"][0]["because"][0]["stock_code"] == code
    assert answers[1]["error"].startswith("the line is not valid JSON")
    assert "price_min (5) is greater than price_max (1)" in answers[2]["error"]
    assert answers[3]["error"] == "empty line"
    assert answers[4]["fallback"] is True and top not in [i["stock_code"] for i in answers[4]["items"]]
    assert "because" not in answers[5]["items"][0] and answers[5]["model_version"] == model.version

    # A run killed in the middle of line 3: resuming keeps lines 1-2, drops the partial one and goes on.
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:2]) + text[2][:10])
    resumed = export.answer_baskets(model, baskets, out, resume=True, progress=False)
    assert resumed.skipped == 2 and resumed.rows == 4
    assert [json.loads(line) for line in out.read_text().splitlines()] == answers


def test_the_command(served, tmp_path, trained_storage):
    out = tmp_path / "fbt.csv"
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert cli.main(["export", "--out", str(out), "--n", "3"]) == 0
    model = served[0]
    assert f"wrote {len(model.items) * 3:,} rows" in printed.getvalue()
    assert registry.active_version(trained_storage, registry.FEED) in printed.getvalue()
    assert cli.main(["export", "--out", str(tmp_path / "fbt.xml")]) == 1


def test_an_output_that_is_the_input_or_a_folder_is_refused(served, tmp_path, capsys):
    code = served[0].items.codes[0]
    baskets = tmp_path / "b.jsonl"
    baskets.write_text(json.dumps({"product_list": [code], "n": 3}) + "\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(baskets)
    for out in (baskets, link, tmp_path / "." / "b.jsonl"):
        assert cli.main(["export", "--baskets", str(baskets), "--out", str(out)]) == 1
        assert "is the baskets file itself: writing the answers there would erase it" in capsys.readouterr().err
        assert json.loads(baskets.read_text())["product_list"] == [code]
    folder = tmp_path / "out"
    folder.mkdir()
    for args in (["--baskets", str(baskets)], ["--format", "csv"]):
        assert cli.main(["export", *args, "--out", str(folder)]) == 1
        err = capsys.readouterr().err
        assert f"OUT={folder} is a folder: give a file name" in err and "Traceback" not in err
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob(".*partial"))
