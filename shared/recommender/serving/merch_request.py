"""What a merchandised request may ask beyond the basket and n (Options), and what its answer holds (Pick)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from recommender.core.errors import InvalidInput
from recommender.core.items import Item

if TYPE_CHECKING:
    from recommender.serving.merch_reasons import Because

MODEL, POPULAR, PINNED, NEW = "model", "popular", "pinned", "new"
SOURCES = (MODEL, POPULAR, PINNED, NEW)  # new: a product the model never saw, placed by its twins (new_items.py)


@dataclass(frozen=True)
class Options:
    """What a request may ask beyond the basket and n (all optional; explain says whether to give reasons)."""

    exclude: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    max_price_ratio: float | None = None
    min_confidence: float | None = None
    max_per_category: int | None = None
    explain: bool = False

    def __post_init__(self) -> None:
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise InvalidInput(f"price_min ({self.price_min:g}) is greater than price_max ({self.price_max:g})")
        for name in ("price_min", "price_max", "max_price_ratio"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise InvalidInput(f"{name} must be a number >= 0, not {value}")
        if self.min_confidence is not None and not 0 <= self.min_confidence <= 1:
            raise InvalidInput(f"min_confidence must be between 0 and 1, not {self.min_confidence}")
        if self.max_per_category is not None and self.max_per_category < 1:
            raise InvalidInput(f"max_per_category must be at least 1, not {self.max_per_category}")

    @property
    def filters(self) -> bool:
        """Whether any option narrows the eligible items."""
        return bool(
            self.exclude
            or self.categories
            or self.exclude_categories
            or self.price_min is not None
            or self.price_max is not None
            or self.max_price_ratio is not None
        )

    @property
    def static_filters(self) -> tuple:
        """The filters that do not depend on the basket: what a policy's request masks are remembered by."""
        return (self.categories, self.exclude_categories, self.price_min, self.price_max)


NO_OPTIONS = Options()


class Pick(NamedTuple):
    """One recommended item with where it came from; item and score as in serving.model.Scored."""

    item: Item
    score: float  # the ranking score: the model's score times the boost, if any
    source: str  # model, popular or pinned
    confidence: float | None
    # With explain: the basket items making up the score, {"stock_code", "description", "share", "baskets"}:
    # share = that item's table weight / the score (they sum to 1; negative when the regression weighs the
    # pairing down), baskets = training baskets holding both.
    because: Because | None
    boost: float | None  # the rules' factor when it is not 1
    row: int
    attributes: dict  # what the feed says of the item (and its price), when known
    # With explain, for items the learned re-ranker ordered: the features that moved it up most, in words.
    ranked_by: list[dict] | None = None
    like: Item | None = None  # a new product's nearest known twin (source new)
