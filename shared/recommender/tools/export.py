"""Batch export (make export): every item's top N complements as a file (csv, jsonl or parquet), or the answers to a
file of baskets (one JSON object per line, answered in order, streaming), both through the served path with the
active feed and rules applied."""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from recommender.core.errors import InvalidInput, RecommenderError
from recommender.core.extras import optional
from recommender.core.storage import Storage
from recommender.serving.http_errors import describe_validation_error
from recommender.serving.merchandising import Options
from recommender.serving.model import Model, ModelHolder
from recommender.serving.schemas import RecommendationsIn, answer_json

FORMATS = ("csv", "jsonl", "parquet")
COLUMNS = (
    "item_code",
    "item_description",
    "rank",
    "stock_code",
    "description",
    "score",
    "confidence",
    "source",
    "reason_code",
    "reason_description",
    "reason_share",
    "reason_baskets",
    "boost",
    "price",
    "category",
    "availability",
    "model_version",
    "feed_version",
    "rules_version",
)
# A cell starting with one of these is run as a formula by spreadsheets (OWASP "CSV injection"); descriptions come
# from uploaded files, so such cells get a leading apostrophe in csv and parquet.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    path: Path
    rows: int
    items: int
    seconds: float
    errors: int = 0
    skipped: int = 0


def neutralize(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, made inert with a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def served_model(storage: Storage) -> Model:
    """The active model under the active feed and rules, as a serving process would answer with it."""
    holder = ModelHolder(storage, poll_seconds=0)
    model = holder.refresh()
    if model is None:
        holder.current()  # raises ModelUnavailable with the reason
    return model


def check_output(out: Path, source: Path | None = None) -> None:
    """Refuse an output that is a folder, or the same file as the input (through links too): writing it would
    erase what is being read."""
    if out.is_dir():
        raise InvalidInput(f"OUT={out} is a folder: give a file name, e.g. {out / 'export.csv'}")
    if source is not None and out.exists() and source.exists() and os.path.samefile(out, source):
        raise InvalidInput(f"OUT={out} is the baskets file itself: writing the answers there would erase it")


def format_of(out: Path, given: str | None) -> str:
    """The output format: as given, else from the file name."""
    fmt = (given or out.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise InvalidInput(
            f"unknown export format {fmt or '(none)'!r} for {out.name}: use FORMAT=csv, jsonl or parquet"
        )
    return fmt


def complement_rows(model: Model, n: int, safe: bool = True) -> Iterator[tuple]:
    """One row (in COLUMNS order) per (item, rank): each item of the model asked alone, feed and rules applied,
    with its top reason; with safe, text cells neutralized (each item's texts once, not each cell)."""
    options = Options(explain=True)
    clean = neutralize if safe else (lambda v: v)
    items = model.items
    codes = [clean(c) for c in items.codes]
    descriptions = [clean(d) for d in items.descriptions]
    versions: tuple | None = None
    categories: dict[int, Any] = {}
    for i, code in enumerate(items.codes):
        answer = model.recommend([code], n, options)
        if versions is None:
            versions = (answer.model_version, answer.feed_version, answer.rules_version)
        for rank, pick in enumerate(answer.items, start=1):
            row = pick.row
            attributes = pick.attributes
            if row not in categories:
                categories[row] = clean(attributes.get("category"))
            reason = None
            if pick.because is not None and len(pick.because):
                because = pick.because
                s = int(because.sources[0])
                reason = (codes[s], descriptions[s], float(because.shares[0]), int(because.counts[0]))
            yield (
                codes[i],
                descriptions[i],
                rank,
                codes[row],
                descriptions[row],
                pick.score,
                pick.confidence,
                pick.source,
                *(reason or (None, None, None, None)),
                pick.boost,
                attributes.get("price"),
                categories[row],
                attributes.get("availability"),
                *versions,
            )


def export_complements(
    model: Model, out: str | Path, n: int = 10, fmt: str | None = None, progress: bool = True
) -> ExportSummary:
    """Write every item's top n complements to out; the file appears complete or not at all."""
    out = Path(out)
    check_output(out)
    fmt = format_of(out, fmt)
    if fmt == "parquet":
        optional("pyarrow", "FORMAT=parquet")
    if not 1 <= n <= 100:
        raise InvalidInput(f"N must be from 1 to 100, not {n}")
    started = time.perf_counter()
    tmp = out.with_name(f".{out.name}.partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    stop = threading.Event()
    prefetch = threading.Thread(target=_ask_annoy_ahead, args=(model, stop), name="annoy-prefetch", daemon=True)
    prefetch.start()
    with tqdm(
        total=len(model.items), desc="export", unit=" items", leave=False, disable=None if progress else True
    ) as bar:
        rows = complement_rows(model, n, safe=fmt != "jsonl")
        try:
            if fmt == "csv":
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    writer = csv.writer(f)
                    writer.writerow(COLUMNS)
                    for chunk in _chunks(rows, bar):
                        writer.writerows(chunk)
                        written += len(chunk)
            elif fmt == "jsonl":
                with open(tmp, "w", encoding="utf-8") as f:
                    for chunk in _chunks(rows, bar):
                        f.write("".join(json.dumps(dict(zip(COLUMNS, r)), ensure_ascii=False) + "\n" for r in chunk))
                        written += len(chunk)
            else:
                written = _write_parquet(tmp, _chunks(rows, bar), model)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            stop.set()
            prefetch.join()
    tmp.replace(out)
    return ExportSummary(out, written, len(model.items), time.perf_counter() - started)


def _ask_annoy_ahead(model: Model, stop: threading.Event, block: int = 256) -> None:
    """Ask Annoy for every item's neighbours in model order, ahead of the export that needs them: Annoy's search
    releases the GIL, so on a second core it overlaps the answering (an item asked by both is asked twice, with
    the same answer)."""
    for start in range(0, len(model.items), block):
        if stop.is_set():
            return
        model.near(np.arange(start, min(start + block, len(model.items)), dtype=np.int64))


def _chunks(rows: Iterator[tuple], bar: Any, size: int = 20_000) -> Iterator[list[tuple]]:
    """Rows in lists of about size, the progress bar moved by the items they cover."""
    chunk: list[tuple] = []
    last = None
    for row in rows:
        if row[0] != last:
            bar.update(1)
            last = row[0]
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_parquet(path: Path, chunks: Iterator[list[tuple]], model: Model) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "rank": pa.int32(),
        "score": pa.float64(),
        "confidence": pa.float64(),
        "reason_share": pa.float64(),
        "reason_baskets": pa.int32(),
        "boost": pa.float64(),
        "price": pa.float64(),
    }
    schema = pa.schema(
        [(c, types.get(c, pa.string())) for c in COLUMNS],
        metadata={
            "model_version": model.version,
            "feed_version": model.feed_version or "",
            "rules_version": model.rules_version or "",
        },
    )
    written = 0
    with pq.ParquetWriter(path, schema) as writer:
        for chunk in chunks:
            columns = list(zip(*chunk))
            writer.write_table(pa.Table.from_pydict(dict(zip(COLUMNS, columns)), schema=schema))
            written += len(chunk)
    return written


def _complete_lines(path: Path) -> int:
    """How many complete lines a previous run wrote; a partial last line (a killed run) is cut off."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
    return data[:keep].count(b"\n")


def answer_line(model: Model, number: int, line: str) -> dict:
    """The answer to one line of a baskets file: {"line", ...the /recommendations answer} or {"line", "error"}."""
    try:
        request = RecommendationsIn.model_validate_json(line)
        options = request.options(explain=True)
        answer = model.recommend(request.product_list, request.n, options or Options())
        return {"line": number, **answer_json(answer, options is not None and options.explain)}
    except ValidationError as err:
        return {"line": number, "error": describe_validation_error(err.errors()).replace("request body", "the line")}
    except RecommenderError as err:
        return {"line": number, "error": err.message}


def answer_baskets(
    model: Model, baskets: str | Path, out: str | Path, resume: bool = False, progress: bool = True
) -> ExportSummary:
    """Answer every line of a JSON-lines baskets file into out, in order, one line each (an error object for a
    bad line, and the run goes on). With resume, the lines out already holds are kept and not asked again."""
    baskets, out = Path(baskets), Path(out)
    if not baskets.is_file():
        raise InvalidInput(f"baskets file not found: {baskets}")
    check_output(out, baskets)
    started = time.perf_counter()
    done = _complete_lines(out) if resume else 0
    with open(baskets, "rb") as f:
        total = sum(1 for _ in f)
    written = errors = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(baskets, encoding="utf-8", errors="replace") as src,
        open(out, "a" if resume else "w", encoding="utf-8") as dst,
        tqdm(
            total=total, initial=done, desc="baskets", unit=" lines", leave=False, disable=None if progress else True
        ) as bar,
    ):
        for number, line in enumerate(src, start=1):
            if number <= done:
                continue
            answer = answer_line(model, number, line) if line.strip() else {"line": number, "error": "empty line"}
            errors += "error" in answer
            dst.write(json.dumps(answer, ensure_ascii=False) + "\n")
            written += 1
            bar.update(1)
    return ExportSummary(out, written, written, time.perf_counter() - started, errors, done)
