"""make bench-spark's pieces: process-tree memory, model agreement, the table (the heavy runs never run in make test)."""

import os
from dataclasses import replace

from bench.spark import SparkBenchOptions, big_spec, compare_models, report_table, tree_memory


def test_tree_memory_counts_this_process_as_the_driver():
    memory = tree_memory(os.getpid())
    assert memory["driver"] > 10 * 2**20


def test_a_model_agrees_with_itself(trained_folder):
    version = next((trained_folder / "models" / "versions").iterdir())
    found = compare_models(version, version, answers=20)
    assert found["items_identical"] and found["neighbour_sets_identical"] == 1.0
    assert found["max_weight_difference"] == 0.0 and found["annoy_sets_identical"] == 1.0
    assert found["one_item_answers_identical"] == 1.0 and found["items"] > 40


def test_report_table_shows_every_part():
    run = {"seconds": 10.0, "stages": {"svd": 1.0}, "peak_total": 2 * 2**30, "peaks": {"driver": 2**30, "jvm": 2**29}}
    results = {
        "agreement": {
            "runs": {"single": run, "spark": run},
            "items": 100,
            "neighbour_sets_identical": 1.0,
            "max_weight_difference": 0.0,
            "annoy_sets_identical": 0.99,
            "annoy_jaccard_mean": 0.999,
            "embedding_max_difference": 1e-6,
            "one_item_answers_identical": 1.0,
            "load": [1.0],
        },
        "scale": {"dataset": {"rows": 1000, "parts": 2, "bytes": 2**20}, "runs": {"single": run, "spark": run}},
        "big": {"dataset": {"rows": 5000, "parts": 3, "bytes": 2**30, "generated_seconds": 5}, "run": run},
        "single_csv_reference": {"seconds": 245.0, "peak_rss": 5 * 2**30},
    }
    table = report_table(results)
    for expected in (
        "identical neighbour sets | | 100.00%",
        "10M scale set",
        "big set",
        "245.0 s",
        "JVM 0.50",
        "the rest (s) | 9.0 | 9.0",
        "single machine | | 1.00x",
    ):
        assert expected in table, expected


def test_the_big_set_multiplies_invoices_and_customers_alike():
    spec = big_spec(replace(SparkBenchOptions(), big_invoices=10_000_000))
    assert (spec.invoices, spec.customers, spec.products) == (10_000_000, 800_000, 100_000)
