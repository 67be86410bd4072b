"""The product feed file: formats, Google Merchant Center names, header matching, one-line refusals, versions."""

import gzip
import json

import pytest
from openpyxl import Workbook

from recommender.core import registry
from recommender.core.errors import DataFileError, NotFound
from recommender.core.storage import LocalStorage
from recommender.training.feed import FeedLimits, active_model, publish_feed, read_feed, show

ROWS = [
    ["85123A", "in_stock", "2.55 GBP", "Home > Candles", "Acme", "Heart holder"],
    ["71053", "out of stock", "3.39", "Home > Lights", "", ""],
    ["22423", "TRUE", "", "", "Bakers", ""],
    ["84029G", "0", "12", "Home", "", ""],
]


def write(path, header, rows, sep=","):
    text = "\n".join(sep.join(r) for r in [header, *rows]) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    elif path.suffix == ".xlsx":
        book = Workbook()
        sheet = book.active
        for row in [header, *rows]:
            sheet.append([float(c) if c.isdigit() else c for c in row])  # digit codes as numbers, as Excel keeps them
        book.save(path)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("name,sep", [("p.csv", ","), ("p.csv.gz", ","), ("p.tsv", "\t"), ("p.xlsx", None)])
def test_formats_and_merchant_center_names(tmp_path, name, sep):
    header = ["id", "Availability", "price", "product_type", "BRAND", "Title"]
    feed = read_feed(write(tmp_path / name, header, ROWS, sep or ","))
    assert feed.items["85123A"] == {
        "availability": "in_stock",
        "price": 2.55,
        "currency": "GBP",
        "category": "Home > Candles",
        "brand": "Acme",
        "title": "Heart holder",
    }
    assert feed.items["71053"] == {"availability": "out_of_stock", "price": 3.39, "category": "Home > Lights"}
    assert feed.items["22423"] == {"availability": "in_stock", "brand": "Bakers"}
    assert feed.items["84029G"]["availability"] == "out_of_stock" and feed.items["84029G"]["price"] == 12.0


def test_headers_matched_like_the_training_file(tmp_path):
    feed = read_feed(
        write(
            tmp_path / "p.csv",
            ["Stock Code", "image_link", "LINK", "Category", "other"],
            [["85123.0", "http://i/1.jpg", "http://p/1", "Mugs", "x"]],
        )
    )
    assert feed.items == {"85123": {"image_link": "http://i/1.jpg", "link": "http://p/1", "category": "Mugs"}}


@pytest.mark.parametrize(
    "header,rows,message",
    [
        (["name", "price"], [["a", "1"]], "lacks a StockCode \\(or id\\) column; found: name, price"),
        (
            ["id", "availability"],
            [["A1", "maybe"], ["A2", "never"]],
            "line 2: availability 'maybe' is not one of in_stock, out_of_stock, preorder, backorder.* \\(and 1 more",
        ),
        (["id", "price"], [["A1", "1.5"], ["A2", "cheap"]], "line 3: price 'cheap' is not a number"),
        (["id", "price"], [["A1", "-2"]], "line 2: price '-2' is not a number"),
        (["id"], [["A1"], ["A1"]], "line 3: stock code A1 is listed twice \\(first on line 2\\)"),
        (["id", "title"], [["", "x"]], "line 2: the stock code is empty"),
        (["id", "title"], [], "has a header but no rows"),
    ],
)
def test_refusals_are_one_line(tmp_path, header, rows, message):
    with pytest.raises(DataFileError, match=message) as err:
        read_feed(write(tmp_path / "p.csv", header, rows))
    assert "\n" not in str(err.value)


def test_unusable_files(tmp_path):
    with pytest.raises(DataFileError, match="unsupported feed file type .json"):
        read_feed(tmp_path / "p.json")
    with pytest.raises(DataFileError, match="file not found"):
        read_feed(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataFileError, match="is empty"):
        read_feed(tmp_path / "empty.csv")
    (tmp_path / "semi.csv").write_text("id;price\nA;1\n")
    with pytest.raises(DataFileError, match="does not look comma-separated"):
        read_feed(tmp_path / "semi.csv")
    (tmp_path / "bad.xlsx").write_bytes(b"not a workbook")
    with pytest.raises(DataFileError, match="cannot read bad.xlsx"):
        read_feed(tmp_path / "bad.xlsx")


def test_versions_rollback_and_a_refusal_keeps_the_feed(storage, tmp_path):
    lines = []
    first = publish_feed(
        storage, write(tmp_path / "a.csv", ["id", "availability"], [["A1", "in_stock"]]), progress=lines.append
    )
    second = publish_feed(
        storage,
        write(tmp_path / "b.csv", ["id", "availability"], [["A1", "out_of_stock"]]),
        progress=lines.append,
        known_codes={"B2"},
    )
    assert any("1 code(s) not in the current model" in line and "A1" in line for line in lines)
    assert registry.active_version(storage, registry.FEED) == second["version"]
    with pytest.raises(DataFileError):
        publish_feed(storage, write(tmp_path / "c.csv", ["id", "price"], [["A1", "x"]]), progress=lines.append)
    assert registry.active_version(storage, registry.FEED) == second["version"]
    stored = json.loads(registry.read_verified(storage, second["version"], "feed.json", registry.FEED))
    assert stored == {"items": {"A1": {"availability": "out_of_stock"}}}
    assert registry.rollback(storage, registry.FEED) == first["version"]


def test_show(tmp_path, trained_storage):
    assert "no product feed" in show(trained_storage, None)[0]
    model = active_model(trained_storage)
    listed, unlisted = model.codes[0], model.codes[1]
    publish_feed(
        trained_storage,
        write(tmp_path / "a.csv", ["id", "availability", "price"], [[listed, "out_of_stock", "9.99 GBP"]]),
        progress=lambda _m: None,
    )
    summary = "\n".join(show(trained_storage, None))
    assert "1 products" in summary and "1 out_of_stock" in summary
    one = "\n".join(show(trained_storage, listed))
    assert "price used: 9.99 GBP (feed)" in one and "no, out of stock" in one and "training baskets" in one
    other = "\n".join(show(trained_storage, unlisted))
    assert f"price used: {model.prices[1]:g} (most recent UnitPrice" in other and "not listed" in other
    with pytest.raises(NotFound):
        show(trained_storage, "NO-SUCH-CODE")


def test_a_latin1_feed_is_refused_with_its_line_and_byte_or_read_with_encoding(tmp_path):
    path = tmp_path / "feed.csv"
    path.write_bytes("id,title,brand\n85123A,Heart,Acme\n71053,Caf\xe9 lamp,Marqu\xe9\n".encode("latin-1"))
    with pytest.raises(DataFileError, match=r"feed\.csv is not utf-8 text \(line 3: byte e9\).*ENCODING=latin-1"):
        read_feed(path)
    feed = read_feed(path, FeedLimits(encoding="latin-1"))
    assert feed.items["71053"] == {"title": "Café lamp", "brand": "Marqué"}
    with pytest.raises(DataFileError, match="unknown encoding ENCODING='klingon'"):
        read_feed(path, FeedLimits(encoding="klingon"))


@pytest.mark.parametrize("price", ["9" * 400, "1000000001", "1e9"])
def test_infinite_and_absurd_prices_are_refused(tmp_path, price):
    path = write(tmp_path / "feed.csv", ["id", "price"], [["85123A", "2.55"], ["71053", price]])
    with pytest.raises(
        DataFileError, match=r"line 3: price '[0-9e.]+(\.\.\.)?' (is above 1,000,000,000, the highest|is not)"
    ):
        read_feed(path)
    assert read_feed(write(tmp_path / "ok.csv", ["id", "price"], [["A", "1000000000"]])).items["A"]["price"] == 1e9


@pytest.mark.parametrize("name", ["big.csv", "big.csv.gz", "big.tsv"])
def test_a_feed_over_its_limits_is_refused_and_nothing_stored(tmp_path, name):
    rows = [[f"C{i}", "in_stock", "1.00", "Home > Lights " + "x" * 50] for i in range(2000)]
    path = write(
        tmp_path / name, ["id", "availability", "price", "product_type"], rows, "\t" if ".tsv" in name else ","
    )
    storage = LocalStorage(tmp_path / "store")
    with pytest.raises(DataFileError, match=rf"{name} has more than 1,000 products; .* MAX_FEED_ROWS"):
        publish_feed(storage, path, progress=lambda _m: None, limits=FeedLimits(rows=1000))
    with pytest.raises(DataFileError, match=rf"{name} is larger than 50,000 bytes.*MAX_FEED_BYTES"):
        publish_feed(storage, path, progress=lambda _m: None, limits=FeedLimits(bytes=50_000))
    assert registry.active(storage, registry.FEED) is None
    assert len(publish_feed(storage, path, progress=lambda _m: None)["version"]) > 0  # the defaults take it
