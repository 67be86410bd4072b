"""Tools around the product: benchmarks, offline evaluation, synthetic data, the serving ceiling app."""
