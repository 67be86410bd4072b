"""Reading and cleaning purchase-history files: every rule, csv vs xlsx, and every kind of bad file."""

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook

from recommender.core.errors import DataFileError
from recommender.training.ingest import load_transactions

HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
ROWS = [
    ["536365", "85123A", "WHITE HANGING HEART", "6", "2010-12-01 08:26:00", "2.55", "17850", "UK"],
    ["536365", "71053", "WHITE METAL LANTERN", "6", "2010-12-01 08:26:00", "3.39", "17850", "UK"],
    ["536365", "71053", "WHITE METAL LANTERN", "2", "2010-12-01 08:26:00", "3.39", "17850", "UK"],  # same item twice
    ["536366", " 22633 ", "HAND WARMER UNION JACK", "6", "2010-12-01 08:28:00", "1.85", "", "UK"],  # guest, padded
    ["536366", "85123A", "CREAM HANGING HEART", "6", "2010-12-02 08:28:00", "2.55", "", "UK"],  # newer description
    ["C536379", "22633", "HAND WARMER UNION JACK", "-1", "2010-12-01 09:41:00", "27.5", "14527", "UK"],  # cancelled
    ["536367", "84879", "ASSORTED BIRD ORNAMENT", "0", "2010-12-01 08:34:00", "1.69", "13047", "UK"],  # qty 0
    ["536367", "84879", "ASSORTED BIRD ORNAMENT", "-3", "2010-12-01 08:34:00", "1.69", "13047", "UK"],  # return
    ["536367", "", "NO CODE", "1", "2010-12-01 08:34:00", "1.0", "13047", "UK"],  # empty code
    ["536367", "POST", "POSTAGE", "1", "2010-12-01 08:34:00", "18", "13047", "UK"],  # service
    ["536367", "BANK CHARGES", "Bank Charges", "1", "2010-12-01 08:34:00", "15", "13047", "UK"],  # service
    ["536367", "22423", "", "2", "2010-12-01 08:34:00", "12.75", "13047", "UK"],  # no description
    ["536367", "21730", "GLASS STAR FROSTED", "6", "2010-12-01 08:34:00", "4.25", "13047", "UK"],
]


def write_csv(path: Path, header=HEADER, rows=ROWS, sep=",") -> Path:
    path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n")
    return path


def write_xlsx(path: Path, header=HEADER, rows=ROWS, numeric=True) -> Path:
    """Like Excel saves it: digit-only codes and ids become numeric cells."""
    wb = Workbook()
    ws = wb.active
    ws.append(header)
    for row in rows:
        ws.append([int(v) if numeric and v.strip().isdigit() else v for v in row])
    wb.save(path)
    return path


@pytest.fixture
def csv_file(tmp_path):
    return write_csv(tmp_path / "retail.csv")


def test_cleaning_rules(csv_file):
    tx = load_transactions(csv_file)
    r = tx.report
    assert r.rows_read == 13
    assert r.dropped == {"cancelled invoice": 1, "quantity <= 0": 2, "empty invoice or code": 1, "service code": 2}
    assert r.rows_kept == 7
    assert tx.item_codes == ["85123A", "71053", "22633", "22423", "21730"]  # padded code stripped
    assert (r.baskets, r.items, r.customers, r.guest_baskets) == (3, 5, 2, 1)
    # distinct items per basket: the repeated 71053 line counts once
    assert len(tx.pair_item) == 2 + 2 + 2


def test_description_is_the_most_recent_non_empty(csv_file):
    tx = load_transactions(csv_file)
    desc = dict(zip(tx.item_codes, tx.descriptions))
    assert desc["85123A"] == "CREAM HANGING HEART"
    assert desc["22423"] == ""


def test_guest_baskets_kept_and_basket_times(csv_file):
    tx = load_transactions(csv_file)
    guest = tx.basket_ids.index("536366")
    assert tx.basket_customer[guest] == -1
    assert str(tx.basket_time[guest]) == "2010-12-01T08:28:00"  # earliest line


def test_csv_gz_and_other_columns_ignored(tmp_path):
    path = tmp_path / "retail.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(",".join(HEADER + ["Extra"]) + "\n")
        f.writelines(",".join(r + ["zzz"]) + "\n" for r in ROWS)
    assert load_transactions(path).item_codes == ["85123A", "71053", "22633", "22423", "21730"]


def test_minimal_columns_without_quantity_or_date(tmp_path):
    path = write_csv(
        tmp_path / "min.csv",
        ["StockCode", "InvoiceNo", "CustomerID", "Description"],
        [["1", "10", "", "a"], ["2", "10", "", "b"], ["3", "11", "7", "c"]],
    )
    tx = load_transactions(path)
    assert tx.item_codes == ["1", "2", "3"]
    assert np.isnat(tx.basket_time).all()


def test_xlsx_gives_the_same_ids_as_csv(tmp_path, csv_file):
    from_csv = load_transactions(csv_file)
    from_xlsx = load_transactions(write_xlsx(tmp_path / "retail.xlsx"))
    assert from_xlsx.item_codes == from_csv.item_codes  # "22633", never "22633.0"
    assert from_xlsx.basket_ids == from_csv.basket_ids
    assert from_xlsx.descriptions == from_csv.descriptions
    assert (from_xlsx.basket_customer == from_csv.basket_customer).all()
    assert (from_xlsx.pair_item == from_csv.pair_item).all()
    assert from_xlsx.report == from_csv.report


def test_xlsx_float_cells_are_normalized(tmp_path):
    rows = [
        ["536365", "85123", "A", "1", "2010-12-01 08:26:00", "1", "17850", "UK"],
        ["536365", "71053", "B", "1", "2010-12-01 08:26:00", "1", "17850", "UK"],
    ]
    wb = Workbook()
    ws = wb.active
    ws.append(HEADER)
    for r in rows:
        ws.append([float(v) if v.isdigit() else v for v in r])
    wb.save(tmp_path / "floats.xlsx")
    tx = load_transactions(tmp_path / "floats.xlsx")
    assert tx.item_codes == ["85123", "71053"]
    assert tx.basket_ids == ["536365"]


def test_synthetic_csv_and_xlsx_agree(tmp_path, tiny_csv):
    import pandas as pd

    frame = pd.read_csv(tiny_csv, dtype=str, keep_default_na=False)
    write_xlsx(tmp_path / "tiny.xlsx", list(frame.columns), frame.values.tolist())
    a, b = load_transactions(tiny_csv), load_transactions(tmp_path / "tiny.xlsx")
    assert a.item_codes == b.item_codes and a.report == b.report


# --- bad input: one clear message each --------------------------------------------------------------


def bad(path, match):
    with pytest.raises(DataFileError, match=match) as err:
        load_transactions(path)
    assert "\n" not in err.value.message
    return err.value.message


def test_unsupported_extension(tmp_path):
    (tmp_path / "data.json").write_text("{}")
    bad(tmp_path / "data.json", r"unsupported file type \.json")


def test_missing_file(tmp_path):
    bad(tmp_path / "absent.csv", "file not found")


def test_renamed_binary_as_xlsx(tmp_path):
    path = tmp_path / "fake.xlsx"
    path.write_bytes(bytes(range(256)) * 40)
    bad(path, "cannot read fake.xlsx as .xlsx")


def test_truncated_xlsx(tmp_path):
    full = write_xlsx(tmp_path / "full.xlsx").read_bytes()
    path = tmp_path / "cut.xlsx"
    path.write_bytes(full[: len(full) // 2])
    bad(path, "cannot read cut.xlsx as .xlsx")


def test_binary_renamed_csv(tmp_path):
    path = tmp_path / "fake.csv.gz"
    path.write_bytes(b"this is not gzip at all")
    bad(path, "cannot read fake.csv.gz")


def test_zip_renamed_csv(tmp_path):
    path = tmp_path / "archive.csv"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.txt", "hello" * 100)
    message = bad(path, "archive.csv")
    assert "cannot read" in message or "lacks required" in message


def test_semicolon_csv(tmp_path):
    path = write_csv(tmp_path / "semi.csv", sep=";")
    bad(path, "semicolon-separated")


def test_missing_columns_named_with_those_found(tmp_path):
    path = write_csv(tmp_path / "cols.csv", ["InvoiceNo", "StockCode", "Quantity"], [["1", "2", "3"]])
    message = bad(path, "lacks required column")
    assert "Description, CustomerID" in message and "found: InvoiceNo, StockCode, Quantity" in message


def test_missing_columns_in_xlsx(tmp_path):
    path = write_xlsx(tmp_path / "cols.xlsx", ["InvoiceNo", "Code"], [["1", "2"]])
    bad(path, "lacks required column.*found: InvoiceNo, Code")


def test_header_only(tmp_path):
    bad(write_csv(tmp_path / "header.csv", rows=[]), "header but no data rows")
    bad(write_xlsx(tmp_path / "header.xlsx", rows=[]), "header but no data rows")


def test_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    bad(tmp_path / "empty.csv", "empty")


def test_nothing_left_after_cleaning(tmp_path):
    rows = [r for r in ROWS if r[0].startswith("C") or r[1] in ("POST", "BANK CHARGES")]
    message = bad(write_csv(tmp_path / "junk.csv", rows=rows), "nothing left")
    assert "1 cancelled invoice" in message and "2 service code" in message


def test_online_retail_ii_headers_accepted(tmp_path):
    header = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
    from_ii = load_transactions(write_csv(tmp_path / "ii.csv", header=header))
    assert from_ii.item_codes == load_transactions(write_csv(tmp_path / "i.csv")).item_codes
    assert from_ii.report.customers == 2
    xlsx = load_transactions(write_xlsx(tmp_path / "ii.xlsx", header=header))
    assert xlsx.item_codes == from_ii.item_codes and xlsx.report == from_ii.report


def test_xlsx_without_calamine_falls_back_to_openpyxl(tmp_path, csv_file, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "python_calamine", None)  # import fails as if it were not installed
    from_xlsx = load_transactions(write_xlsx(tmp_path / "retail.xlsx"))
    from_csv = load_transactions(csv_file)
    assert from_xlsx.item_codes == from_csv.item_codes and from_xlsx.report == from_csv.report


LATIN = (
    "InvoiceNo,StockCode,Description,CustomerID\n"
    "1,85123A,PLAIN MUG,17850\n"
    "1,ÉTÉ-1,CAFÉ CRÈME SET,17850\n"
    "2,ÉTÉ-1,CAFÉ CRÈME SET,\n"
    "2,85123A,PLAIN MUG,\n"
)


@pytest.mark.parametrize("name", ["latin.csv", "latin.csv.gz"])
def test_a_csv_in_another_encoding_is_refused_or_read_with_its_encoding(tmp_path, name):
    path = tmp_path / name
    data = LATIN.encode("latin-1")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(
        DataFileError,
        match=rf"^{name} is not utf-8 text \(line 3: byte c9\): save it as UTF-8, "
        r"or give its encoding, e.g. ENCODING=cp1252",
    ):
        load_transactions(path)
    tx = load_transactions(path, encoding="latin-1")
    assert set(tx.item_codes) == {"85123A", "ÉTÉ-1"} and "CAFÉ CRÈME SET" in tx.descriptions
    with pytest.raises(DataFileError, match="unknown encoding ENCODING='klingon'"):
        load_transactions(path, encoding="klingon")


def test_utf8_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(LATIN.encode("utf-8-sig"))
    assert set(load_transactions(path).item_codes) == {"85123A", "ÉTÉ-1"}


def test_categorical_columns_clean_as_text_columns():
    """A chunk of categoricals (Arrow's csv, a workbook) hands its codes to the cleaning and the codebooks: the same
    rows, values, drops and ids as the same chunk as plain text (codes "85123" and "85123.0" one item; a date only
    on a dropped row; a category no row uses)."""
    import pandas as pd

    from recommender.training.ingest import Codebook, clean_chunk

    text = pd.DataFrame(
        {
            "InvoiceNo": ["1", "1", "C2", "3", "3", "4", "", "5"],
            "StockCode": ["85123.0", "POST", "7", "85123", " 9 ", "9", "7", "85123"],
            "Description": ["a ", "", "b", "c", "", "d", "e", "f"],
            "CustomerID": ["17850.0", "", "1", "17850", "", "2", "3", " 2"],
            "Quantity": ["1", "1", "-1", "2", "x", "3", "1", "4"],
            "InvoiceDate": [
                "2011-01-02 10:00",
                "2011-01-02 10:00",
                "1/5/2011 9:00",
                "",
                "bad",
                "2011-01-03",
                "",
                "2011-01-03",
            ],
            "UnitPrice": ["1.5", "0", "2", "abc", "-1", "3.25", "1", " 4 "],
        }
    )
    coded = text.apply(lambda col: pd.Categorical(col, categories=[*dict.fromkeys(col), "unused"]))
    plain, fast = clean_chunk(text), clean_chunk(coded)
    assert fast.dropped == plain.dropped and len(fast) == len(plain) == 4
    for name in ("invoice", "code", "customer", "description", "price"):
        assert getattr(fast, name).tolist() == getattr(plain, name).tolist(), name
    assert fast.time.tobytes() == plain.time.tobytes()
    for name in ("invoice", "code", "customer"):
        books = Codebook(), Codebook()
        for _ in range(2):  # the second chunk: ids already known
            ids = books[0].encode(getattr(plain, name)), books[1].encode_coded(getattr(fast, f"{name}_coded"))
            assert ids[0].tolist() == ids[1].tolist() and books[0].values == books[1].values, name
