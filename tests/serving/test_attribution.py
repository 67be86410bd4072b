"""Recommendation ids round-trip and refuse anything else."""

import pytest

from recommender.core.errors import InvalidInput
from recommender.serving.attribution import new_recommendation_id, parse_recommendation_id

VERSION = "20261202T110000123Z-abcdef01ab12"


def test_round_trip_with_and_without_arm() -> None:
    ref = parse_recommendation_id(new_recommendation_id(VERSION, 1764673200123))
    assert (ref.version, ref.arm, ref.at_ms) == (VERSION, None, 1764673200123)
    assert parse_recommendation_id(new_recommendation_id(VERSION, 1764673200123, "b")).arm == "b"


def test_ids_are_unique() -> None:
    assert len({new_recommendation_id(VERSION, 1) for _ in range(1000)}) == 1000


@pytest.mark.parametrize("bad", ["", "r1", "r2.v.-.1764673200123.abcdef01", f"r1.{VERSION}.-.17.abcdef01", "x" * 500])
def test_refuses_what_it_did_not_give(bad: str) -> None:
    with pytest.raises(InvalidInput, match="recommendation_id"):
        parse_recommendation_id(bad)
