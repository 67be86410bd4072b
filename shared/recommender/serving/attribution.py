"""Recommendation ids: each answer's id names its model version, experiment arm and time, so that events can be
tied back to the answer that led to them without a lookup."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from recommender.core.errors import InvalidInput

# r1.<model version>.<arm, "-" for none>.<unix time in ms>.<8 random hex digits>
_PATTERN = re.compile(r"r1\.([0-9A-Za-z-]{1,64})\.([0-9A-Za-z_-]{1,32})\.([0-9]{10,15})\.([0-9a-f]{8})")
NO_ARM = "-"


@dataclass(frozen=True)
class RecommendationRef:
    """What a recommendation id says about its answer."""

    version: str
    arm: str | None
    at_ms: int


def new_recommendation_id(version: str, at_ms: int, arm: str | None = None) -> str:
    """A new id for an answer of `version` (and experiment `arm`) given at `at_ms` (unix time in milliseconds)."""
    return f"r1.{version}.{arm or NO_ARM}.{at_ms}.{secrets.token_hex(4)}"


def parse_recommendation_id(text: str) -> RecommendationRef:
    """The model version, arm and time an id names; InvalidInput when it is not one this service gives."""
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise InvalidInput(
            f"recommendation_id {text[:80]!r} is not an id this service gave (r1.<version>.<arm>.<ms>.<hex>)"
        )
    version, arm, at_ms, _ = match.groups()
    return RecommendationRef(version, None if arm == NO_ARM else arm, int(at_ms))
