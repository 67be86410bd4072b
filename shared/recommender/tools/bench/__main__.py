"""`python -m recommender.tools.bench <task> <json>`: a timed step in a fresh interpreter (see common.run_child)."""

from __future__ import annotations

import json
import sys
from typing import Sequence

from recommender.tools.bench.scale import child_quality
from recommender.tools.bench.train import child_train


def _child_main(argv: Sequence[str]) -> int:
    tasks = {"child-train": child_train, "child-quality": child_quality}
    tasks[argv[0]](json.loads(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
