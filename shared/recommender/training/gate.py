"""The activation gate, where training code has always named it: it lives in serving/gate.py, which the console's
Versions page runs too."""

from recommender.serving.gate import (  # noqa: F401 (re-exported)
    MARGIN,
    MIN_CASES,
    Comparison,
    NoComparison,
    check,
    compare,
    measured,
)
