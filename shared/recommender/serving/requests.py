"""What a recommendation request may hold (the HTTP body of /send_data and /recommendations, and each line of a
batch file), and the self-describing answer built from a Recommendation."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from recommender.serving.merchandising import Options, Pick
from recommender.serving.model import Recommendation

MAX_BASKET = 1000
MAX_N = 100
MAX_CATEGORIES = 100

Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Codes = Annotated[list[StrictStr], Field(max_length=MAX_BASKET)]
Categories = Annotated[list[StrictStr], Field(max_length=MAX_CATEGORIES)]


class BasketIn(BaseModel):
    """A basket: the stock codes a shopper holds, how many items to recommend, and optional filters."""

    # Strict: a value of another JSON type than the schema says (true for a price, "5" for n) is refused, not
    # converted; integers are still numbers.
    model_config = ConfigDict(extra="ignore", strict=True)

    product_list: Annotated[list[StrictStr], Field(max_length=MAX_BASKET, description="stock codes in the basket")]
    n: Annotated[int, Field(ge=1, le=MAX_N, description="how many items to recommend")] = 5
    exclude: Codes | None = Field(None, description="codes never to recommend in this answer")
    categories: Categories | None = Field(None, description="only items in one of these categories (a level's "
                                                            "name or a path such as 'Home > Kitchen')")
    exclude_categories: Categories | None = Field(None, description="no items in any of these categories")
    price_min: Price | None = Field(None, description="only items priced at least this (items of unknown price "
                                                      "are left out)")
    price_max: Price | None = Field(None, description="only items priced at most this")
    max_price_ratio: Price | None = Field(None, description="only items priced at most this multiple of the "
                                                            "priciest basket item's price")
    min_confidence: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="only items whose calibrated confidence is at least this")
    max_per_category: Annotated[int, Field(ge=1, le=MAX_N)] | None = Field(
        None, description="at most this many items of one category (diversity)")
    explain: bool | None = Field(None, description="give each item's reasons (default: true on /recommendations, "
                                                   "false on /send_data)")

    @model_validator(mode="after")
    def _consistent(self) -> "BasketIn":
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError(f"price_min ({self.price_min:g}) is greater than price_max ({self.price_max:g})")
        return self

    def options(self, explain: bool) -> Options | None:
        """The request's options (explain defaulting as given); None when it has none and explain is off, so the
        plain path answers exactly as before."""
        explained = self.explain if self.explain is not None else explain
        given = {name: getattr(self, name) for name in ("exclude", "categories", "exclude_categories", "price_min",
                                                        "price_max", "max_price_ratio", "min_confidence",
                                                        "max_per_category") if getattr(self, name) is not None}
        if not given and not explained:
            return None
        for name in ("exclude", "categories", "exclude_categories"):
            if name in given:
                given[name] = tuple(v.strip() for v in given[name])
        return Options(**given, explain=explained)


def item_json(pick: Any, explain: bool) -> dict:
    """One answered item: code, description, score, confidence, source, the feed's attributes, and with explain
    its reasons (because) and boost."""
    if not isinstance(pick, Pick):  # the plain path's Scored
        return {"stock_code": pick.item.stock_code, "description": pick.item.description, "score": pick.score}
    out = {"stock_code": pick.item.stock_code, "description": pick.item.description, "score": pick.score,
           "confidence": pick.confidence, "source": pick.source, **pick.attributes}
    if explain:
        if pick.because is not None and pick.source != "popular":
            out["because"] = pick.because.as_list()
        if pick.boost is not None:
            out["boost"] = pick.boost
    return out


def answer_json(answer: Recommendation, explain: bool) -> dict:
    """The self-describing answer of /recommendations (and of a batch file's line)."""
    return {
        "items": [item_json(p, explain) for p in answer.items],
        "model_version": answer.model_version,
        "feed_version": answer.feed_version,
        "rules_version": answer.rules_version,
        "unknown_codes": answer.unknown,
        "fallback": answer.fallback,
        "exhausted": answer.exhausted,
    }
