"""The benchmark harness's pieces, cheaply: statistics, stage timing, the result table and files, the ceiling app,
the uvicorn options both servers share, and small real measurements on the tiny model (no timed assertions)."""

import json
import math

import pytest
from fastapi.testclient import TestClient

from bench import ceiling, cold, common, deployment, options, report, scale, serve, train
from recommender.core.registry import active_version
from recommender.core.settings import get_settings
from recommender.local import server
from recommender.serving.model import load_model
from recommender.serving.tokens import issue_token, load_secret
from recommender.training.ingest import load_transactions
from tests.conftest import ROOT

SECRET = "s" * 48


def test_statistics():
    assert common.median([3, 1, 2]) == 2
    assert common.percentile(list(range(101)), 99) == pytest.approx(99)
    assert math.isnan(common.percentile([], 50))
    assert common.growth_exponent([1, 10, 100], [3, 300, 30000]) == pytest.approx(2.0)
    assert common.growth_exponent([1e6, 3e6, 1e7], [10, 30, 100]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "message, stage",
    [
        ("svd: 128 factors (5.5 s)", "svd"),
        ("neighbours: 381,069 pairs, at most 100 per item (0.6 s)", "neighbours"),
        ("read and cleaned in 1.4 s", "clean"),
        ("saved version 2026 to /x (9.7 MB, 0.0 s)", "write"),
        ("  rows read: 531,282", None),
        ("reading /data/file.csv", None),
        ("", None),
    ],
)
def test_stage_of_training_message(message, stage):
    assert train.stage_of_message(message) == stage


def test_stage_clock_accumulates_recurring_stages():
    clock = train.StageClock()
    for _ in range(2):
        clock.mark("read")
        clock.mark("clean")
    assert set(clock.stages) == {"read", "clean"}
    assert all(s["seconds"] >= 0 and s["peak_rss"] > 0 for s in clock.stages.values())
    assert clock.peak >= max(s["peak_rss"] for s in clock.stages.values())


def test_xlsx_target_is_its_parse_plus_the_csv_training(tmp_path, capsys):
    met, missed = train.xlsx_over_parse_row(9.0, 4.5, 4.0), train.xlsx_over_parse_row(10.0, 4.5, 4.0)
    assert (met.met, met.target, met.value) == (True, "<= 1.1 (9.35 s)", 1.059)
    assert missed.met is False and missed.note.startswith("missed by 0.65 s: 5.50 s above the parse")
    from tests.training.test_ingest import write_xlsx

    train.child_xlsx_parse({"source": str(write_xlsx(tmp_path / "r.xlsx"))})  # what bench train runs beside it
    result = json.loads(capsys.readouterr().out.strip().removeprefix(common.RESULT_MARK))
    assert 0 < result["seconds"] < 5


def test_target_rows_and_table():
    slow = report.target_row("train", "csv total", "train_csv_seconds", 7.5, "s", "slowest stage: svd")
    fast = report.target_row("serve", "ratio", "serve_rps_ratio", 0.9, "x")
    plain = report.Row("serve", "p50", 812.25, "µs")
    assert (slow.met, slow.target, slow.status()) == (False, "<= 3 s", "MISSED")
    assert slow.note == "missed by 4.5 s (150%): slowest stage: svd"  # by how much, then why
    assert (fast.met, fast.target, fast.note) == (True, ">= 0.85 x", "")
    assert plain.status() == "" and plain.shown() == "812.2 µs"
    assert report.target_row("serve", "errors", "serve_errors", 0, "").met is True
    text = report.format_table([slow, fast, plain])
    assert "MISSED" in text and "slowest stage: svd" in text and len(text.splitlines()) == 5
    md = report.format_table([slow], markdown=True)
    assert md.splitlines()[0].startswith("| part | measure") and "| MISSED |" in md


def _part(name, rows):
    return report.PartResult(
        name,
        rows,
        {"x": 1},
        "2026-01-01T00:00:00+00:00",
        1.5,
        [0.1, 0.2, 0.3],
        [0.1, 0.2, 0.3],
        False,
        f"## {name} details",
    )


def test_write_results_keeps_other_parts(tmp_path):
    machine = {"cores": 2, "memory_gib": 24, "python": "3.11", "libraries": {"numpy": "2"}, "commit": "abc"}
    report.write_results(
        [_part("train", [report.Row("train", "csv", 4.0, "s", "<= 5 s", True)])], tmp_path, machine, "bench train"
    )
    json_path, md_path = report.write_results(
        [_part("serve", [report.Row("serve", "ratio", 0.5, "x", ">= 0.7 x", False, "why")])],
        tmp_path,
        machine,
        "bench serve",
    )
    combined = json.loads(json_path.read_text())
    assert set(combined["parts"]) == {"train", "serve"}
    assert combined["parts"]["serve"]["rows"][0]["status"] == "MISSED"
    md = md_path.read_text()
    assert "| train | csv |  | 4 s |" in md and "| serve | ratio |  | 0.5 x | >= 0.7 x | MISSED | why |" in md
    assert "## train details" in md and "## serve details" in md and "`bench serve`" in md


def test_table_shows_the_figures_from_before(tmp_path):
    (tmp_path / report.BASELINE).write_text(
        json.dumps({"source": "main at abc", "rows": [{"part": "serve", "measure": "ratio", "shown": "0.711 x"}]})
    )
    machine = {"cores": 2, "memory_gib": 24, "python": "3.11", "libraries": {}, "commit": "def"}
    row = report.target_row("serve", "ratio", "serve_rps_ratio", 0.8, "x", "why")
    _json, md_path = report.write_results([_part("serve", [row])], tmp_path / "quick", machine, "bench serve --quick")
    md = md_path.read_text()  # quick runs find the baseline one level up
    assert "`before`: main at abc" in md
    assert "| serve | ratio | 0.711 x | 0.8 x | >= 0.85 x | MISSED | missed by 0.05 x (6%): why |" in md
    text = report.format_table([row], before=report.load_baseline(tmp_path))
    assert text.splitlines()[0].split()[:4] == ["part", "measure", "before", "value"] and "0.711 x" in text


@pytest.mark.parametrize("create", [ceiling.create_app, ceiling.create_starlette_app])
def test_ceiling_checks_the_token_and_answers_ten_items(create):
    client = TestClient(create(SECRET))
    token = issue_token("bench", SECRET)
    ok = client.post("/send_data", json={"product_list": ["1"], "n": 10}, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and len(ok.json()["result"]["recommendation"]) == 10
    assert client.post("/send_data", json={}).status_code == 401
    forged = issue_token("bench", "x" * 48)
    assert client.post("/send_data", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert client.get("/health").json() == {"status": "ok"}


def test_the_starlette_ceiling_parses_the_body():
    client = TestClient(ceiling.create_starlette_app(SECRET))
    headers = {"Authorization": f"Bearer {issue_token('bench', SECRET)}"}
    assert client.post("/send_data", content=b"not json", headers=headers).status_code == 422
    assert client.post("/send_data", json=["a list"], headers=headers).status_code == 422
    assert "fastapi" not in type(ceiling.create_starlette_app(SECRET)).__module__


def test_paired_ratios_are_taken_round_by_round():
    runs = [
        {"app": "ceiling, Starlette", "round": 1, "rps": 100.0},
        {"app": "product", "round": 1, "rps": 90.0},
        {"app": "ceiling, Starlette", "round": 2, "rps": 50.0},
        {"app": "product", "round": 2, "rps": 60.0},
        {"app": "ceiling, Starlette", "round": 3, "rps": 70.0},
    ]
    assert serve.paired(runs, "product", "ceiling, Starlette", "rps") == [0.9, 1.2]


def test_ceiling_and_product_run_uvicorn_alike(monkeypatch, trained_storage, tmp_path):
    import uvicorn

    monkeypatch.setenv("PORT", str(deployment.free_port()))
    get_settings.cache_clear()
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    ceiling.main()
    ceiling.main("starlette")
    server.serve(get_settings(), ROOT / "template.yaml")
    assert calls[0] == calls[1] == calls[2] == server.uvicorn_options(get_settings())


def test_recommend_latency_and_baskets_on_the_tiny_model(trained_storage, tiny_csv):
    baskets = deployment.sample_baskets(load_transactions(tiny_csv), 50, seed=1, max_items=4)
    assert len(baskets) == 50 and all(1 <= len(b) <= 4 and len(set(b)) == len(b) for b in baskets)
    model = load_model(trained_storage, active_version(trained_storage))
    stats = deployment.recommend_latency(model, baskets, n=5, repeats=1, warmup=5)
    assert 0 < stats["p50_us"] <= stats["p99_us"] and stats["calls"] == 50


def test_profile_training_times_every_stage(tiny_csv, tmp_path):
    run = train.profile_training(str(tiny_csv), str(tmp_path / "store"), imports_seconds=0.25)
    assert {"imports", "read", "clean", "matrix", "svd", "index", "write"} <= set(run["stages"])
    assert sum(s["seconds"] for s in run["stages"].values()) == pytest.approx(run["seconds"], rel=0.05, abs=0.05)
    assert run["peak_rss"] > 0 and "index.ann" in run["artifact_bytes"]


def test_parse_importtime():
    stderr = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       500 |        500 |     pydantic.main",
            "import time:      1000 |       1500 |   fastapi.routing",
            "import time:      2000 |       3500 | fastapi",
            "import time:       300 |        300 | json",
        ]
    )
    parsed = cold.parse_importtime(stderr)
    assert parsed["by_package"][0] == {"package": "fastapi", "self_ms": 3.0, "modules": 2}
    assert parsed["by_self"][0]["module"] == "fastapi" and parsed["total_ms"] == pytest.approx(3.8)


def test_growth_estimate():
    runs = [
        {"sweep": "rows", "rows": r, "products": 100, "seconds": r / 100, "peak_rss": 100 + r, "baseline_rss": 100}
        for r in (1000, 3000, 10000)
    ]
    runs += [
        {
            "sweep": "products",
            "rows": 3000,
            "products": p,
            "seconds": 30 * (p / 100) ** 0.5,
            "peak_rss": 100 + 3000,
            "baseline_rss": 100,
        }
        for p in (10, 30)
    ]
    est = scale.growth_estimate(runs, 0.3)
    assert est["time_rows"] == pytest.approx(1.0) and est["memory_rows"] == pytest.approx(1.0)
    assert est["time_products"] == pytest.approx(0.5, abs=0.01) and est["memory_products"] == pytest.approx(0.0)
    assert est["time_rows_top"] == pytest.approx(1.0) and est["time_10x_rows"] == pytest.approx(1000)


@pytest.mark.slow
def test_cold_start_of_the_handler_on_the_tiny_model(trained_storage, user, tiny_csv):
    settings = get_settings()
    token = issue_token(user.username, load_secret(settings, trained_storage), stamp=user.stamp)
    baskets = deployment.sample_baskets(load_transactions(tiny_csv), 5)
    dep = deployment.Deployment(trained_storage.root, settings, token, baskets, active_version(trained_storage))
    result = cold.bench_cold(options.Options(template=ROOT / "template.yaml", cold_repeats=1), dep)
    assert result.rows[0].value > 0 and result.details["imports"]["by_package"]
    assert (
        sum(v for k, v in result.details["median"].items() if k != "total") <= result.details["median"]["total"] + 1e-6
    )


def test_scale_report_renders_saved_details():
    stages = {"read": {"seconds": 1.0, "peak_rss": 2**30}, "svd": {"seconds": 400.0, "peak_rss": 7 * 2**30}}
    runs = [
        {
            "sweep": "rows",
            "rows": r,
            "products": 100,
            "items": 100,
            "seconds": r / 1000,
            "peak_rss": 2**20 * r,
            "baseline_rss": 2**20,
            "stages": {"svd": r / 2000},
        }
        for r in (1000, 3000, 10000)
    ]
    details = {
        "dataset": {"rows": 10000, "invoices": 1000, "products": 100, "bytes": 10**6},
        "train": {"seconds": 401.0, "peak_rss": 7 * 2**30, "stages": stages, "artifact_bytes": {"index.ann": 2**20}},
        "quality": {
            "latency": {"p50_us": 900.0, "p99_us": 2500.0, "items": 100},
            "hr_product": 0.3,
            "hr_popularity": 0.1,
            "cases": 50,
            "cases_available": 80,
        },
        "growth_runs": runs,
        "growth": scale.growth_estimate(runs, 0.3),
        "plan": {"invoices": 1000, "products": 100, "customers": 10},
    }
    rows, md = scale.scale_report(details)
    status = {r.measure: r.status() for r in rows}
    assert status["train: total wall time"] == "MISSED" and status["train: peak RSS"] == "MISSED"
    assert status["query p99 (in-process)"] == "MISSED" and status["HR@10 lift over popularity"] == "met"
    assert any(r.note.endswith("slowest stage: svd 400.0 s") for r in rows) and "| svd | 400.00 |" in md


def test_merch_part_pieces(trained_folder):
    from bench.merch import RULES, paired_latency, synthetic_merchandising
    from recommender.core import registry
    from recommender.core.storage import LocalStorage
    from recommender.serving.merchandising import Options, Policy
    from recommender.serving.model import load_model
    from recommender.training.rules import validate

    storage = LocalStorage(trained_folder)
    plain = load_model(storage, registry.active_version(storage))
    feed, rules = synthetic_merchandising(plain.items, plain.item_price)
    stored = validate(rules)
    assert set(feed["items"]) == set(plain.items.codes) and len(stored["pin"]) <= RULES["pin"]
    assert [len(stored["block"]["codes"]), len(stored["do_not_pair"]), len(stored["boost"])] == [
        RULES["block"],
        RULES["do_not_pair"],
        RULES["boost"],
    ]
    merch = plain.with_policy(Policy(plain.items, plain.item_price, feed, stored, "f", "r"))
    baskets = [[c] for c in plain.items.codes[:20]]
    latency = paired_latency(plain, merch, baskets, Options(price_max=10.0, explain=True), repeats=2)
    assert latency["p99_ratio"] > 0 and latency["cpu_p99_ratio"] > 0 and len(latency["runs"]["merch"]) == 2


def test_merch_answers_write_every_field_of_every_answer(trained_folder):
    # The comparison of two versions of the code reads every field: each must be written, and the same answers
    # must write the same line.
    import json

    from bench.merch import synthetic_merchandising
    from bench.merch_answers import answers, busy_rules, option_sets
    from recommender.core import registry
    from recommender.core.storage import LocalStorage
    from recommender.serving.merchandising import Policy
    from recommender.serving.model import load_model

    storage = LocalStorage(trained_folder)
    plain = load_model(storage, registry.active_version(storage))
    feed, rules = synthetic_merchandising(plain.items, plain.item_price)
    rules["block"]["codes"] = []  # 200 blocked codes block every item of the tiny model
    merch = plain.with_policy(Policy(plain.items, plain.item_price, feed, busy_rules(plain, rules), "f", "r"))
    baskets = [list(plain.items.codes[i : i + 1 + i % 3]) for i in range(0, 30, 3)]
    sets = option_sets(plain, feed)
    written = [json.dumps(answers(merch, baskets, options, 10)) for options in sets]
    assert written == [json.dumps(answers(merch, baskets, options, 10)) for options in sets]
    picks = [pick for answer in json.loads(written[2]) for pick in answer[0]]  # explain, no filters
    assert picks and all(len(pick) == 10 for pick in picks)
    assert any(pick[4] for pick in picks)  # the reasons
    assert all(pick[4] is None for answer in json.loads(written[3]) for pick in answer[0])  # none without explain


def test_search_part_on_a_few_items():
    from bench import search

    result = search.bench_search(options.Options.quick_options(search_products=2000))
    assert [r.measure for r in result.rows][-1].startswith("GET /items search p99")
    assert result.rows[-1].met is not None and result.details["queries"] > 300
    assert len(search.search_items(2000)) == 2000


def test_login_flood_result_and_row():
    from collections import Counter

    from bench.login_flood import FloodResult
    from bench.logins import flood_markdown, flood_row

    result = FloodResult([(200, 0.4), (200, 1.9), (200, 2.1), (503, 0.0)], Counter({503: 900, 429: 100}), 20.0)
    assert result.succeeded_in_time == 2
    summary = result.summary()
    assert summary["flood_per_second"] == 50.0 and summary["legit_statuses"] == {200: 3, 503: 1}
    row = flood_row(result)
    assert row.value == 50.0 and row.met is False and row.note.startswith("missed by")
    assert flood_row(FloodResult([(200, 0.5)] * 18, Counter(), 1.0)).met is True
    assert "| 4 | 503 | 0.00 |" in flood_markdown(result)
