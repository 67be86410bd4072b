"""Spark benchmark (`make bench-spark`): both engines on the 10M-row scale set (Parquet parts) with local[2], time and
peak memory (driver, JVM, Python workers); their agreement on Online Retail; optionally a bigger synthetic set.

Each training runs as `python -m recommender train` in a fresh process, as a user runs it; memory is the resident
set of its whole process tree, sampled twice a second and split by role: the driver's Python, the JVM (in local
mode it is the driver and the executors), and the Python workers the executors start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, GiB, load_average, machine_info, say, shown
from bench.options import RETAIL_CSV, data_dir, retail_file

PAGE = os.sysconf("SC_PAGE_SIZE")
STAGES = (
    ("read and cleaned in", "read + clean"),
    ("matrix:", "matrix"),
    ("item-item table", "item-item table"),
    ("svd", "svd"),
    ("index", "index"),
    ("saved version", "write"),
    ("done in", "total"),
)


@dataclass(frozen=True)
class SparkBenchOptions:
    """What `make bench-spark` measures; big_invoices > 0 adds the big synthetic run (about 10 rows an invoice)."""

    cache_dir: Path = ROOT / "data" / "bench"
    out_dir: Path = ROOT / "bench" / "results"
    data_dir: Path = field(default_factory=data_dir)  # the Online Retail csv.gz of the agreement (BENCH_DATA_DIR)
    master: str = "local[2]"
    invoices: int = 1_000_000
    products: int = 100_000
    customers: int = 80_000
    big_invoices: int = 0
    scale: bool = True
    agreement: bool = True
    # In local mode the executors run inside the driver's JVM: its heap holds the shuffled co-occurrence blocks
    # (the 10M-row set ran out of a 4 GB heap). Half the machine's memory by default.
    driver_memory: str = field(default_factory=lambda: f"{max(2, os.sysconf('SC_PHYS_PAGES') * PAGE // 2**31)}g")

    @property
    def csv(self) -> Path:
        """Online Retail as csv.gz (ConfigError when absent)."""
        return retail_file(RETAIL_CSV, self.data_dir)


# ---------------------------------------------------------------------------------------------------------
# A training as a user runs it, with the memory of its process tree.
# ---------------------------------------------------------------------------------------------------------
def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out[int(entry)] = (ppid, cmd)
        except (OSError, ValueError, IndexError):
            continue
    return out


def _role(pid: int, root: int, cmd: str) -> str:
    if pid == root:
        return "driver"
    if "java" in cmd.split(" ", 1)[0]:
        return "jvm"
    if "pyspark" in cmd or "worker" in cmd:
        return "workers"
    return "other"


def tree_memory(root: int) -> dict[str, int]:
    """Resident bytes of a process and its descendants, by role."""
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cmd) in procs.items():
        children.setdefault(ppid, []).append(pid)
    totals: dict[str, int] = {}
    stack, seen = [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, []))
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
        role = _role(pid, root, procs.get(pid, (0, ""))[1])
        totals[role] = totals.get(role, 0) + rss
    return totals


def measure_training(
    source: str | Path, storage: Path, engine: str, options: SparkBenchOptions, timeout: float = 6 * 3600
) -> dict:
    """`python -m recommender train` on source: wall time, the stage times it prints, peak memory by role."""
    env = dict(os.environ, SPARK_MASTER=options.master, SPARK_DRIVER_MEMORY=options.driver_memory, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "recommender", "--storage", str(storage), "train", "--engine", engine, str(source)]
    peaks: dict[str, int] = {}
    peak_total = 0
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # the child's output, read once it ends
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        while proc.poll() is None:
            sample = tree_memory(proc.pid)
            for role, rss in sample.items():
                peaks[role] = max(peaks.get(role, 0), rss)
            peak_total = max(peak_total, sum(sample.values()))
            if time.perf_counter() - t > timeout:
                proc.kill()
            time.sleep(0.5)
        seconds = time.perf_counter() - t
        log.seek(0)
        lines = [line for line in log if not line.startswith(("{", " ", "\t"))][-200:]
    if proc.returncode != 0:  # Spark's own ERROR lines name the cause; the last lines, what the user saw
        errors = [line for line in lines if " ERROR " in line or "Error:" in line][:8]
        tail = "".join(errors + [line for line in lines[-10:] if line not in errors])
        raise RuntimeError(f"training with engine {engine} failed (exit {proc.returncode}):\n{tail}")
    stages = {}
    for line in lines:
        text = line.strip()
        for prefix, name in STAGES:
            if text.startswith(prefix):
                found = re.findall(r"\(?([\d.]+) s[,)]?", text) or re.findall(r"in ([\d.]+) s", text)
                if found:
                    stages[name] = float(found[-1])
    version = next((m.group(1) for m in map(re.compile(r"done in .*version (\S+)").search, lines) if m), None)
    return {
        "engine": engine,
        "source": str(source),
        "seconds": round(seconds, 1),
        "stages": stages,
        "peak_total": peak_total,
        "peaks": peaks,
        "version": version,
        "log": [
            line.rstrip() for line in lines if not line.startswith(("WARNING", "Using Spark", "Setting", "To adjust"))
        ][-40:],
    }


# ---------------------------------------------------------------------------------------------------------
# Datasets: the scale preset and the big run, as Parquet parts (generated once, kept in cache_dir).
# ---------------------------------------------------------------------------------------------------------
def parquet_dataset(spec: Any, folder: Path) -> tuple[Path, dict]:
    """The synthetic spec as Parquet parts under folder, generated once and reused while spec and generator hold."""
    import hashlib

    from recommender.tools import synthetic

    source_hash = synthetic.source_digest()
    digest = hashlib.sha256((repr(spec) + source_hash).encode()).hexdigest()[:10]
    path = folder / f"synthetic-{spec.invoices}inv-{spec.products}prod-{digest}.parquet.d"
    meta_path = path.with_name(path.name + ".json")
    if path.is_dir() and meta_path.exists():
        return path, json.loads(meta_path.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    say(f"generating {path.name} (once; kept for later runs)")
    t = time.perf_counter()
    summary = synthetic.write_parquet_parts(spec, path)
    size = sum(p.stat().st_size for p in path.iterdir())
    meta = {
        "spec": asdict(spec),
        "rows": summary.rows,
        "invoices": summary.invoices,
        "products": summary.products,
        "customers": summary.customers,
        "generated_seconds": round(time.perf_counter() - t, 1),
        "bytes": size,
        "parts": len(list(path.iterdir())),
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return path, meta


def big_spec(options: SparkBenchOptions) -> Any:
    """The big run's set: the scale set with invoices and customers multiplied alike, over the same products. A
    retailer with 10x the invoices has more customers, not customers who each buy 10x as much (whose histories,
    capped at 500 items, would carry up to 16 times the co-occurrence work)."""
    from recommender.tools import synthetic

    customers = max(1, options.customers * options.big_invoices // options.invoices)
    return synthetic.preset("scale", invoices=options.big_invoices, products=options.products, customers=customers)


# ---------------------------------------------------------------------------------------------------------
# Agreement of two models.
# ---------------------------------------------------------------------------------------------------------
def _by_target(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    indptr, target, weight = (np.load(folder / f"table_{n}.npy") for n in ("indptr", "target", "weight"))
    source = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    order = np.lexsort((source, target))
    bounds = np.searchsorted(target[order], np.arange(len(indptr)))
    sources, weights = source[order], weight[order]  # sorted once: each item's slice is a view of these
    return (
        [sources[bounds[i] : bounds[i + 1]] for i in range(len(indptr) - 1)],
        [weights[bounds[i] : bounds[i + 1]] for i in range(len(indptr) - 1)],
    )


def compare_models(single: Path, spark: Path, annoy_neighbours: int = 50, answers: int = 1000) -> dict:
    """How far two versions' folders agree: items, each item's neighbour set in the table and the weights on
    them, each item's nearest items in the Annoy index, and answers to one-item baskets."""
    from annoy import AnnoyIndex

    from recommender.core.items import ITEMS_FILE

    items_a, items_b = (json.loads((f / ITEMS_FILE).read_text()) for f in (single, spark))
    sources_a, weights_a = _by_target(single)
    sources_b, weights_b = _by_target(spark)
    same_sets = [np.array_equal(a, b) for a, b in zip(sources_a, sources_b)]
    diffs = [float(np.abs(wa - wb).max()) for ok, wa, wb in zip(same_sets, weights_a, weights_b) if ok and len(wa)]
    manifest = json.loads((single / "manifest.json").read_text())
    k = manifest["model"]["factors"]
    search_k = manifest["model"]["query"]["search_k_per_item"]
    index_a, index_b = AnnoyIndex(k, "angular"), AnnoyIndex(k, "angular")
    index_a.load(str(single / "index.ann"))
    index_b.load(str(spark / "index.ann"))
    n = index_a.get_n_items()
    overlap, identical = [], 0
    for i in range(n):
        a = set(index_a.get_nns_by_item(i, annoy_neighbours, search_k=search_k))
        b = set(index_b.get_nns_by_item(i, annoy_neighbours, search_k=search_k))
        overlap.append(len(a & b) / max(1, len(a | b)))
        identical += a == b
    vectors = (
        np.array([index_a.get_item_vector(i) for i in range(n)]),
        np.array([index_b.get_item_vector(i) for i in range(n)]),
    )
    same_answers = _same_answers(single, spark, answers)
    return {
        "items": n,
        "items_identical": items_a == items_b,
        "neighbour_sets_identical": float(np.mean(same_sets)),
        "max_weight_difference": max(diffs, default=0.0),
        "annoy_sets_identical": identical / n,
        "annoy_jaccard_mean": float(np.mean(overlap)),
        "embedding_max_difference": float(np.abs(vectors[0] - vectors[1]).max()),
        "one_item_answers_identical": same_answers,
    }


def _same_answers(single: Path, spark: Path, count: int) -> float:
    from recommender.core.storage import LocalStorage
    from recommender.serving.model import load_model

    models = [load_model(LocalStorage(f.parents[2]), f.name) for f in (single, spark)]
    codes = models[0].items.codes[:count]
    same = 0
    for code in codes:
        a, b = (m.recommend([code], 10) for m in models)
        same += [s.item.stock_code for s in a.items] == [s.item.stock_code for s in b.items]
    return same / max(1, len(codes))


def _version_folder(storage: Path, version: str) -> Path:
    return storage / "models" / "versions" / version


# ---------------------------------------------------------------------------------------------------------
# The benchmark.
# ---------------------------------------------------------------------------------------------------------
def bench_spark(options: SparkBenchOptions) -> dict:
    """Run what the options ask for; print the table; write bench/results/spark.json and spark-table.md."""
    from recommender.tools import synthetic

    if options.agreement:
        retail_file(RETAIL_CSV, options.data_dir)  # absent: stop now, saying how to provide it, not after the long runs
    results: dict[str, Any] = {
        "machine": machine_info(),
        "options": {k: str(v) for k, v in asdict(options).items()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with tempfile.TemporaryDirectory(prefix="recommender-bench-spark-") as tmp:
        if options.agreement:
            say(f"agreement on {options.csv.name}: both engines")
            runs = {e: measure_training(options.csv, Path(tmp) / f"or-{e}", e, options) for e in ("single", "spark")}
            results["agreement"] = {
                "runs": runs,
                **compare_models(
                    _version_folder(Path(tmp) / "or-single", runs["single"]["version"]),
                    _version_folder(Path(tmp) / "or-spark", runs["spark"]["version"]),
                ),
            }
            results["agreement"]["load"] = load_average()
        if options.scale:
            spec = synthetic.preset(
                "scale", invoices=options.invoices, products=options.products, customers=options.customers
            )
            path, meta = parquet_dataset(spec, options.cache_dir)
            results["scale"] = {"dataset": meta, "runs": {}}
            for engine in ("single", "spark"):
                say(
                    f"scale: engine {engine} on {meta['rows']:,} rows ({meta['parts']} Parquet parts), load "
                    f"{load_average()}"
                )
                run = measure_training(path, Path(tmp) / f"scale-{engine}", engine, options)
                run["load_before"] = load_average()
                results["scale"]["runs"][engine] = run
                shutil.rmtree(Path(tmp) / f"scale-{engine}", ignore_errors=True)
        if options.big_invoices:
            spec = big_spec(options)
            t = time.perf_counter()
            path, meta = parquet_dataset(spec, options.cache_dir)
            say(
                f"big run: engine spark on {meta['rows']:,} rows ({meta['parts']} parts, {meta['bytes'] / GiB:.1f} "
                f"GiB), load {load_average()}"
            )
            run = measure_training(path, Path(tmp) / "big", "spark", options)
            run["load_after"] = load_average()
            results["big"] = {
                "dataset": meta,
                "dataset_seconds": round(time.perf_counter() - t, 1) - run["seconds"],
                "run": run,
            }
    previous = options.out_dir / "spark.json"
    if previous.exists():  # a part not run this time keeps its last figures
        old = json.loads(previous.read_text())
        for part in ("agreement", "scale", "big"):
            if part not in results and part in old:
                results[part] = old[part]
    results["single_csv_reference"] = _scale_reference(options.out_dir)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps(results, indent=1, default=str))
    table = report_table(results)
    # The table only: spark.md beside it is the hand-kept account of the runs, which a rerun must not erase.
    (options.out_dir / "spark-table.md").write_text("# make bench-spark\n\n" + table + "\n")
    print(table)
    print(f"\nresults: {shown(options.out_dir / 'spark-table.md')} and {shown(previous)}")
    return results


def _scale_reference(out_dir: Path) -> dict | None:
    """The single-machine trainer on the same 10M rows as csv.gz, from the last `make bench-scale`."""
    path = out_dir / "scale.json"
    if not path.exists():
        return None
    train = json.loads(path.read_text())["details"]["train"]
    return {"seconds": round(train["seconds"], 1), "peak_rss": train["peak_rss"]}


def _rest(run: dict) -> float:
    """The wall time outside the stages a training prints with their times (start-up, the items, the sample
    invoices, the holdout, the write)."""
    timed = sum(v for k, v in run["stages"].items() if k not in ("total", "write"))
    return round(run["seconds"] - timed, 1)


def _gib(n: float) -> str:
    return f"{n / GiB:.2f}"


def report_table(results: dict) -> str:
    """One Markdown table of everything measured."""
    lines = ["| what | single machine | Spark local[2] | note |", "|---|---|---|---|"]
    agreement = results.get("agreement")
    if agreement:
        runs = agreement["runs"]
        lines.append(
            f"| Online Retail: training wall time (s) | {runs['single']['seconds']} | {runs['spark']['seconds']}"
            f" | load {agreement.get('load', ['?'])[0]} |"
        )
        lines += [
            f"| Online Retail: identical neighbour sets | | {agreement['neighbour_sets_identical']:.2%} | "
            f"{agreement['items']:,} items |",
            f"| Online Retail: max weight difference | | {agreement['max_weight_difference']:.1e} | table weights |",
            f"| Online Retail: identical Annoy top-50 sets | | {agreement['annoy_sets_identical']:.2%} | "
            f"mean Jaccard {agreement['annoy_jaccard_mean']:.4f}; embeddings differ by at most "
            f"{agreement['embedding_max_difference']:.1e} |",
            f"| Online Retail: identical one-item answers (n=10) | | {agreement['one_item_answers_identical']:.2%} | |",
        ]
    scale = results.get("scale")
    if scale:
        single, spark = scale["runs"]["single"], scale["runs"]["spark"]
        meta = scale["dataset"]
        lines.append(
            f"| 10M scale set: training wall time (s) | {single['seconds']} | {spark['seconds']} | "
            f"{meta['rows']:,} rows, {meta['parts']} Parquet parts ({meta['bytes'] / 2**20:,.0f} MiB) |"
        )
        for stage in ("read + clean", "matrix", "item-item table", "svd", "index"):
            lines.append(
                f"| 10M: {stage} (s) | {single['stages'].get(stage, '')} | {spark['stages'].get(stage, '')} | |"
            )
        lines.append(
            f"| 10M: the rest (s) | {_rest(single)} | {_rest(spark)} | start-up, items, sample invoices, holdout, "
            "write |"
        )
        lines.append(f"| 10M: Spark / single machine | | {spark['seconds'] / single['seconds']:.2f}x | wall time |")
        lines.append(
            f"| 10M: peak memory, whole process tree (GiB) | {_gib(single['peak_total'])} | "
            f"{_gib(spark['peak_total'])} | |"
        )
        lines.append(
            f"| 10M: peak memory by role (GiB) | driver {_gib(single['peaks'].get('driver', 0))} | driver "
            f"{_gib(spark['peaks'].get('driver', 0))}, JVM {_gib(spark['peaks'].get('jvm', 0))}, Python "
            f"workers {_gib(spark['peaks'].get('workers', 0))} | JVM = driver + executors in local mode |"
        )
    reference = results.get("single_csv_reference")
    if reference:
        lines.append(
            f"| 10M as csv.gz (`make bench-scale`) | {reference['seconds']} s, "
            f"{_gib(reference['peak_rss'])} GiB | | reading csv text instead of Parquet |"
        )
    big = results.get("big")
    if big:
        run, meta = big["run"], big["dataset"]
        lines.append(
            f"| big set: training wall time (s) | | {run['seconds']} | {meta['rows']:,} rows, "
            f"{meta['parts']} parts ({meta['bytes'] / GiB:.1f} GiB), generated in "
            f"{meta['generated_seconds']:.0f} s |"
        )
        for stage in ("read + clean", "matrix", "item-item table", "svd"):
            lines.append(f"| big: {stage} (s) | | {run['stages'].get(stage, '')} | |")
        lines.append(
            f"| big: peak memory (GiB) | | {_gib(run['peak_total'])} | driver "
            f"{_gib(run['peaks'].get('driver', 0))}, JVM {_gib(run['peaks'].get('jvm', 0))}, workers "
            f"{_gib(run['peaks'].get('workers', 0))} |"
        )
    return "\n".join(lines)
