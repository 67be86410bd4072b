"""Results: rows of one table, written as JSON and Markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.common import PARTS, TARGETS


# ---------------------------------------------------------------------------------------------------------
# Results: rows of one table, written as JSON and Markdown.
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the result table."""

    part: str
    measure: str
    value: float | int | None
    unit: str
    target: str = ""  # e.g. "<= 5 s"; empty when the issue sets none
    met: bool | None = None  # None when there is no target
    note: str = ""  # the reason a target is missed, or context

    def shown(self) -> str:
        """The value as the table shows it."""
        if self.value is None:
            return "n/a"
        if isinstance(self.value, float):
            v = self.value
            text = f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:,.1f}"
        else:
            text = f"{self.value:,}"
        return f"{text} {self.unit}".strip()

    def status(self) -> str:
        """'met', 'MISSED' or '' (no target)."""
        return "" if self.met is None else "met" if self.met else "MISSED"


def target_row(part: str, measure: str, key: str, value: float | None, unit: str, note: str = "") -> Row:
    """A row checked against TARGETS[key]; a miss says by how much before the note (which should say why)."""
    limit, direction = TARGETS[key]
    met = None if value is None or value != value else (value <= limit if direction == "max" else value >= limit)
    sign = "<=" if direction == "max" else ">="
    if met is False:
        gap = abs(value - limit)
        share = f" ({gap / limit:.0%})" if limit else ""
        note = f"missed by {gap:.3g}{' ' + unit if unit else ''}{share}" + (f": {note}" if note else "")
    return Row(part, measure, value, unit, f"{sign} {limit:g}{' ' + unit if unit else ''}", met, note)


@dataclass
class PartResult:
    """What one part measured: table rows, details for the JSON/Markdown, the date and the machine load."""

    part: str
    rows: list[Row]
    details: dict
    started_at: str
    seconds: float
    load_before: list[float]
    load_after: list[float]
    quick: bool
    markdown: str = ""  # the part's detail section

    def to_json(self) -> dict:
        """JSON-ready form."""
        data = asdict(self)
        data["rows"] = [asdict(r) | {"shown": r.shown(), "status": r.status()} for r in self.rows]
        return data


BASELINE = "baseline.json"


def load_baseline(out_dir: Path) -> dict[tuple[str, str], str]:
    """The figures from before (bench/results/baseline.json, beside out_dir or one level up for quick runs), by
    (part, measure): what the table's "before" column shows."""
    for path in (out_dir / BASELINE, out_dir.parent / BASELINE):
        if path.is_file():
            data = json.loads(path.read_text())
            return {(r["part"], r["measure"]): r["shown"] for r in data["rows"]}
    return {}


def format_table(rows: Sequence[Row], markdown: bool = False, before: dict[tuple[str, str], str] | None = None) -> str:
    """The rows as one table: aligned text for the console, or Markdown; with before, a column of old figures."""
    before = before or {}
    header = ("part", "measure", "before", "value", "target", "status", "note")
    lines = [
        (r.part, r.measure, before.get((r.part, r.measure), ""), r.shown(), r.target, r.status(), r.note) for r in rows
    ]
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])  # the note column runs free
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line).rstrip() for line in lines]
    return "\n".join(out)


def write_results(results: Sequence[PartResult], out_dir: Path, machine: dict, command: str) -> tuple[Path, Path]:
    """Save each part as <part>.json, then rebuild latest.json and latest.md from every part file in out_dir.

    A part run alone (make bench-serve) replaces only its own file; the combined table keeps the other parts'
    last results, each with its own date and machine load.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for result in results:
        data = {"machine": machine, "command": command, **result.to_json()}
        (out_dir / f"{result.part}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    parts = []
    for name in PARTS:
        path = out_dir / f"{name}.json"
        if path.exists():
            parts.append(json.loads(path.read_text()))
    combined = {"machine": machine, "generated_at": now_iso(), "parts": {p["part"]: p for p in parts}}
    json_path = out_dir / "latest.json"
    json_path.write_text(json.dumps(combined, indent=1, default=str) + "\n")
    md_path = out_dir / "latest.md"
    md_path.write_text(markdown_report(parts, machine, out_dir))
    return json_path, md_path


def _rows_of(part: dict) -> list[Row]:
    return [
        Row(**{k: r[k] for k in ("part", "measure", "value", "unit", "target", "met", "note")}) for r in part["rows"]
    ]


def markdown_report(parts: Sequence[dict], machine: dict, out_dir: Path | None = None) -> str:
    """The combined Markdown: machine, one table of every part (with the figures from before), then each part's
    details."""
    libs = ", ".join(f"{k} {v}" for k, v in machine.get("libraries", {}).items() if v)
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine.get('cores')} cores ({machine.get('cpu', '?')}), {machine.get('memory_gib')} GiB, "
        f"Python {machine.get('python')}, {machine.get('platform')}; {machine.get('wrk') or 'wrk not installed'}.",
        f"Libraries: {libs}.",
        "",
        "| part | run at (UTC) | commit | took | load before (1/5/15 min) | quick | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in parts:
        lines.append(
            f"| {p['part']} | {p['started_at']} | {p['machine'].get('commit', '?')} | {p['seconds']:.0f} s | "
            f"{' / '.join(map(str, p['load_before']))} | {'yes' if p['quick'] else 'no'} | `{p['command']}` |"
        )
    rows = [row for p in parts for row in _rows_of(p)]
    before = load_baseline(out_dir) if out_dir is not None else {}
    if before:
        lines += ["", f"`before`: {_baseline_source(out_dir)}"]
    lines += ["", format_table(rows, markdown=True, before=before), ""]
    for p in parts:
        if p.get("markdown"):
            lines += [p["markdown"].rstrip(), ""]
    return "\n".join(lines)


def _baseline_source(out_dir: Path) -> str:
    for path in (out_dir / BASELINE, out_dir.parent / BASELINE):
        if path.is_file():
            return json.loads(path.read_text()).get("source", str(path))
    return ""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
