"""Product tools beside serving and training: offline evaluation against baselines, export of every item's
complements, and the synthetic dataset. The benchmark, soak, fuzz and fault-proxy harness is not installed: it lives
in the repository's top-level `bench/` package."""
