"""The first worksheet of an .xlsx workbook as rows of cell texts, read with the standard library (zipfile and
ElementTree): the console's feed upload takes spreadsheets as `make feed` does, where neither openpyxl nor
calamine may go (serving, the Lambda layer). Cells read as `make feed` reads them (training/ingest.cell_text):
85123.0 is "85123", a date "2010-12-01 08:26:00", an empty cell "". Bounded: at most max_bytes of XML inflated,
at most max_rows rows kept."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import datetime, timedelta
from xml.etree import ElementTree

from recommender.core.errors import DataFileError

MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
RELATIONSHIP = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
PACKAGE = "{http://schemas.openxmlformats.org/package/2006/relationships}"
# Excel's built-in number formats that show a date or time (ECMA-376 18.8.30).
DATE_FORMATS = {14, 15, 16, 17, 18, 19, 20, 21, 22, 45, 46, 47}
_DATE_CODE = re.compile(r"[dmyhs]", re.IGNORECASE)
_QUOTED = re.compile(r'"[^"]*"|\[[^\]]*\]|\\.')


class _TooLarge(Exception):
    """More XML than the limit would be inflated."""


class _Bounded(io.RawIOBase):
    """A workbook member read with a budget shared by all members: a small .xlsx can inflate to gigabytes."""

    def __init__(self, raw: io.BufferedIOBase, budget: list[int]) -> None:
        self.raw, self.budget = raw, budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        data = self.raw.read(len(buffer))
        self.budget[0] -= len(data)
        if self.budget[0] < 0:
            raise _TooLarge
        buffer[: len(data)] = data
        return len(data)


def _column(reference: str) -> int:
    """The column index (from 0) of a cell reference such as "AB12"."""
    index = 0
    for char in reference:
        if not char.isalpha():
            break
        index = index * 26 + ord(char.upper()) - 64
    return index - 1


def _is_date_format(code: str) -> bool:
    return bool(_DATE_CODE.search(_QUOTED.sub("", code)))


def _cell_text(value: float | str | bool | datetime | None) -> str:
    """As training/ingest.cell_text writes a cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).strip()


class _Workbook:
    def __init__(self, archive: zipfile.ZipFile, budget: list[int]) -> None:
        self.archive, self.budget = archive, budget

    def events(self, name: str, tags: tuple[str, ...] = ("end",)):
        """ElementTree's iterparse over a member (no DTD or entities: expat refuses what it cannot bound)."""
        with self.archive.open(name) as member:
            yield from ElementTree.iterparse(io.BufferedReader(_Bounded(member, self.budget)), tags)

    def has(self, name: str) -> bool:
        return name in self.archive.namelist()

    def first_sheet(self) -> tuple[str, bool]:
        """The first worksheet's member name, and whether dates count from 1904."""
        sheet_id, date1904 = None, False
        for _event, node in self.events("xl/workbook.xml"):
            if node.tag == f"{MAIN}sheet" and sheet_id is None:
                sheet_id = node.get(RELATIONSHIP)
            elif node.tag == f"{MAIN}workbookPr":
                date1904 = node.get("date1904") in ("1", "true")
        if sheet_id is None:
            raise DataFileError("has no worksheet")
        for _event, node in self.events("xl/_rels/workbook.xml.rels"):
            if node.tag == f"{PACKAGE}Relationship" and node.get("Id") == sheet_id:
                target = node.get("Target", "")
                return (target.lstrip("/") if target.startswith("/") else f"xl/{target}"), date1904
        raise DataFileError("has no worksheet")

    def shared_strings(self) -> list[str]:
        if not self.has("xl/sharedStrings.xml"):
            return []
        strings = []
        for _event, node in self.events("xl/sharedStrings.xml"):
            if node.tag == f"{MAIN}si":
                # Rich text is several runs; phonetic guides (rPh) are not part of the text.
                strings.append("".join(t.text or "" for r in node if r.tag != f"{MAIN}rPh" for t in r.iter(f"{MAIN}t")))
                node.clear()
        return strings

    def date_styles(self) -> set[int]:
        """The cell styles (indices into cellXfs) that show a number as a date."""
        if not self.has("xl/styles.xml"):
            return set()
        custom, styles, in_xfs = {}, [], False
        for event, node in self.events("xl/styles.xml", ("start", "end")):
            if node.tag == f"{MAIN}cellXfs":
                in_xfs = event == "start"
            elif event == "end" and node.tag == f"{MAIN}numFmt":
                custom[int(node.get("numFmtId", "0"))] = node.get("formatCode", "")
            elif event == "end" and in_xfs and node.tag == f"{MAIN}xf":
                styles.append(int(node.get("numFmtId", "0")))
        return {
            i for i, fmt in enumerate(styles) if fmt in DATE_FORMATS or (fmt in custom and _is_date_format(custom[fmt]))
        }


def _value(cell: ElementTree.Element, strings: list[str], dates: set[int], epoch: datetime) -> object:
    kind = cell.get("t", "n")
    if kind == "inlineStr":
        return "".join(t.text or "" for t in cell.iter(f"{MAIN}t"))
    value = cell.find(f"{MAIN}v")
    text = value.text if value is not None else None
    if text is None:
        return None
    if kind == "s":
        return strings[int(text)]
    if kind == "b":
        return text == "1"
    if kind in ("str", "e"):
        return text
    number = float(text)
    if int(cell.get("s", "0")) in dates:
        return epoch + timedelta(days=number)
    return number


def read_rows(name: str, data: bytes, max_bytes: int, max_rows: int) -> list[list[str]]:
    """The first worksheet's first max_rows rows (header first) as texts, all as wide as the widest, without trailing empty rows;
    DataFileError naming the file for a damaged, empty or too large workbook (make feed's words)."""
    budget = [max_bytes]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            book = _Workbook(archive, budget)
            sheet, date1904 = book.first_sheet()
            strings, dates = book.shared_strings(), book.date_styles()
            epoch = datetime(1904, 1, 1) if date1904 else datetime(1899, 12, 30)
            rows: list[list[str]] = []
            for _event, node in book.events(sheet):
                if node.tag != f"{MAIN}row":
                    continue
                number = int(node.get("r", len(rows) + 1))
                if number > max_rows:
                    break
                rows.extend([] for _ in range(number - 1 - len(rows)))  # rows left out of the file are empty
                row: list[str] = []
                for cell in node.iter(f"{MAIN}c"):
                    column = _column(cell.get("r", "")) if cell.get("r") else len(row)
                    row.extend("" for _ in range(column - len(row)))
                    row.append(_cell_text(_value(cell, strings, dates, epoch)))
                rows.append(row)
                node.clear()
    except DataFileError as err:
        raise DataFileError(f"{name} {err.message}") from None
    except _TooLarge:
        raise DataFileError(
            f"{name} holds more than {max_bytes:,} bytes of spreadsheet data; a feed may hold at most MAX_FEED_BYTES"
        ) from None
    except (zipfile.BadZipFile, KeyError, ValueError, IndexError, ElementTree.ParseError, EOFError, OSError) as err:
        raise DataFileError(f"cannot read {name} as .xlsx: {type(err).__name__}: {err}") from None
    while rows and all(cell == "" for cell in rows[-1]):
        rows.pop()
    if not rows:
        raise DataFileError(f"{name} is empty")
    width = max(len(row) for row in rows)
    return [row + [""] * (width - len(row)) for row in rows]
