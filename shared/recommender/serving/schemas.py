"""The requests and responses of the HTTP API (both functions; events and analytics in event_schemas, the console's
workplace in workplace_schemas), as the pydantic models /docs and the fuzzer read, and the builders of the answers
the fast path renders with orjson without validating them.

Each builder sits under its model and makes exactly that model's fields. Response models forbid other fields, so the
test that checks every route's answers against them (tests/serving/test_schemas.py) fails on any drift between the
two; answers off the fast path (the console's, the auth function's) are the models themselves, validated as built.
"""

from dataclasses import fields
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Form
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator
from pydantic_core import PydanticCustomError

from recommender.core.items import Item
from recommender.serving.merchandising import Options, Pick

if TYPE_CHECKING:
    from recommender.serving.model import Model, Recommendation

MAX_BASKET = 1000
MAX_N = 100
MAX_CATEGORIES = 100

# ---------------------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------------------
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Codes = Annotated[list[StrictStr], Field(max_length=MAX_BASKET)]
Categories = Annotated[list[StrictStr], Field(max_length=MAX_CATEGORIES)]
# Printable text: no control characters (a session or user id lands in logs and queries).
Text = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]

# The request options are Options' fields (explain has its own default per route); the lists become tuples of
# stripped codes or names.
OPTION_NAMES = tuple(f.name for f in fields(Options) if f.name != "explain")
_LIST_OPTIONS = frozenset(f.name for f in fields(Options) if f.default == ())


class BasketIn(BaseModel):
    """A basket: the stock codes a shopper holds, how many items to recommend, and optional filters."""

    # Strict: a value of another JSON type than the schema says (true for a price, "5" for n) is refused, not
    # converted; integers are still numbers.
    model_config = ConfigDict(extra="ignore", strict=True, defer_build=True)

    product_list: Annotated[list[StrictStr], Field(max_length=MAX_BASKET, description="stock codes in the basket")]
    n: Annotated[int, Field(ge=1, le=MAX_N, description="how many items to recommend")] = 5
    exclude: Codes | None = Field(None, description="codes never to recommend in this answer")
    categories: Categories | None = Field(
        None, description="only items in one of these categories (a level's name or a path such as 'Home > Kitchen')"
    )
    exclude_categories: Categories | None = Field(None, description="no items in any of these categories")
    price_min: Price | None = Field(
        None, description="only items priced at least this (items of unknown price are left out)"
    )
    price_max: Price | None = Field(None, description="only items priced at most this")
    max_price_ratio: Price | None = Field(
        None, description="only items priced at most this multiple of the priciest basket item's price"
    )
    min_confidence: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="only items whose calibrated confidence is at least this"
    )
    max_per_category: Annotated[int, Field(ge=1, le=MAX_N)] | None = Field(
        None, description="at most this many items of one category (diversity)"
    )
    explain: bool | None = Field(
        None, description="give each item's reasons (default: true on /recommendations, false on /send_data)"
    )
    # Who asks, as POST /events names them: which arm of a running experiment answers (core.experiments).
    session_id: Text | None = Field(
        None, description="the shopper's session (as in their events): a running experiment's arm is chosen from it"
    )
    user_id: Text | None = Field(
        None, description="the shopper's own id, when known: chooses the experiment arm instead of session_id"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "BasketIn":
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise ValueError(f"price_min ({self.price_min:g}) is greater than price_max ({self.price_max:g})")
        return self

    def options(self, explain: bool) -> Options | None:
        """The request's options (explain defaulting as given); None when it has none and explain is off, so the
        plain path answers exactly as before."""
        explained = self.explain if self.explain is not None else explain
        given = {name: getattr(self, name) for name in OPTION_NAMES if getattr(self, name) is not None}
        if not given and not explained:
            return None
        for name in _LIST_OPTIONS.intersection(given):
            given[name] = tuple(v.strip() for v in given[name])
        return Options(**given, explain=explained)


class RecommendationsIn(BasketIn):
    """A basket for /recommendations: a field it does not know is refused, so that a misspelt filter ("exlude")
    is not silently ignored (/send_data accepts them, as older clients send some)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [k for k in data if k not in cls.model_fields]
            if unknown:
                raise PydanticCustomError(
                    "extra_forbidden",
                    f"unknown field(s) {', '.join(map(repr, unknown))}; the fields are {', '.join(cls.model_fields)}",
                )
        return data


class LoginForm:
    """The OAuth2 password form (RFC 6749, 4.3.2), as FastAPI's OAuth2PasswordRequestForm with the rules it enforces
    written into the schema: username and password must not be empty."""

    def __init__(
        self,
        username: Annotated[str, Form(min_length=1)],
        password: Annotated[str, Form(min_length=1, json_schema_extra={"format": "password"})],
        grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
        scope: Annotated[str, Form()] = "",
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form(json_schema_extra={"format": "password"})] = None,
    ) -> None:
        self.username, self.password = username, password


# ---------------------------------------------------------------------------------------------------------------
# Responses: each forbids fields it does not declare, so that a check of an answer against it catches drift.
# ---------------------------------------------------------------------------------------------------------------
class Out(BaseModel):
    """The base of every response model: no undeclared fields."""

    # Built on first use: the auth function imports this module too, and never uses most of the models.
    model_config = ConfigDict(extra="forbid", defer_build=True)


class ErrorOut(Out):
    """Every error answer: one line saying what is wrong."""

    detail: str


def error_json(detail: str) -> dict:
    """An ErrorOut."""
    return {"detail": detail}


class TokenOut(Out):
    """A bearer token."""

    access_token: str
    token_type: str = "bearer"


class UserOut(Out):
    """What a user may see about themselves."""

    username: str
    full_name: str
    email: str
    role: str = Field(description="admin, merchandiser or viewer")
    rights: list[str] = Field(description="what the role may change: rules, feed, promote, force, users")


class Reason(Out):
    """A basket item's exact part of an item's score, and how many training baskets held both."""

    stock_code: str
    description: str
    share: float
    baskets: int


class LikeOut(Out):
    """The known item a new product (source new) resembles most, whose sales it is recommended by."""

    stock_code: str
    description: str


class RankedBy(Out):
    """One feature that moved a recommended item up: its name, its share of the re-ranker's score, in words."""

    feature: str
    contribution: float
    text: str


class ItemOut(Out):
    """One recommended item, with the product feed's attributes when known and, with explain, its reasons."""

    stock_code: str
    description: str
    score: float
    confidence: float | None = None
    source: Literal["model", "popular", "pinned", "new"] | None = None
    because: list[Reason] | None = None
    # source new: a product the model never saw, recommended by the known item it resembles most.
    like: LikeOut | None = None
    reason: str | None = None
    # With explain, for an item the learned re-ranker ordered: the features that moved it up most, in words.
    ranked_by: list[RankedBy] | None = None
    boost: float | None = None
    # The feed's attributes, when known: core.feed_and_rules.SHOWN, in its order (what Policy.shown lets through).
    price: float | None = None
    currency: str | None = None
    category: str | None = None
    availability: str | None = None
    brand: str | None = None
    title: str | None = None
    image_link: str | None = None
    link: str | None = None


def item_json(pick: Any, explain: bool) -> dict:
    """An ItemOut: code, description, score; for a Pick also confidence, source, the feed's attributes, and with
    explain its reasons (because) and boost."""
    if not isinstance(pick, Pick):  # the plain path's Scored
        return {"stock_code": pick.item.stock_code, "description": pick.item.description, "score": pick.score}
    out = {
        "stock_code": pick.item.stock_code,
        "description": pick.item.description,
        "score": pick.score,
        "confidence": pick.confidence,
        "source": pick.source,
        **pick.attributes,
    }
    if explain:
        if pick.because is not None and pick.source != "popular":
            out["because"] = pick.because.as_list()
        if pick.ranked_by:
            out["ranked_by"] = pick.ranked_by
        if pick.boost is not None:
            out["boost"] = pick.boost
    if pick.like is not None:
        out["like"] = {"stock_code": pick.like.stock_code, "description": pick.like.description}
        out["reason"] = new_reason(pick)
    return out


def new_reason(pick: Pick) -> str:
    """A new product's reason in words: the twin it is recommended by, and what that twin is bought with."""
    text = f"new, like {pick.like.description}"
    sources = pick.because.sources if pick.because is not None and len(pick.because) else ()
    if len(sources) and pick.source != "popular":
        first = next(iter(pick.because))
        if first["stock_code"] == pick.like.stock_code:
            return text + ", which is in the basket"
        text += f", which is bought with {first['description']}"
    return text


class LegacyResult(Out):
    """The original system's answer: [code, description, score] rows, best first (with explain, items too)."""

    recommendation: list[tuple[str, str, float]]
    items: list[ItemOut] | None = None


class LegacyOut(Out):
    """The original system's envelope."""

    result: LegacyResult


def legacy_json(answer: "Recommendation", explain: bool) -> dict:
    """A LegacyOut: the original system's rows (and with explain, the items of /recommendations)."""
    rows = [[s.item.stock_code, s.item.description, s.score] for s in answer.items]
    if explain:
        return {"result": {"recommendation": rows, "items": [item_json(s, True) for s in answer.items]}}
    return {"result": {"recommendation": rows}}


class RecommendationsOut(Out):
    """A self-describing answer."""

    items: list[ItemOut]
    model_version: str
    feed_version: str | None
    rules_version: str | None
    unknown_codes: list[str]
    fallback: bool
    exhausted: bool
    warnings: list[str]  # what the answer says of the request: categories no item is in, pins over a cap
    # Names the answer (model version, experiment arm, time) so that events can be attributed to it
    # (serving.attribution).
    recommendation_id: str


def answer_json(answer: "Recommendation", explain: bool, recommendation_id: str | None = None) -> dict:
    """A RecommendationsOut (also each line of a batch file's answers, which no shopper sees: no id)."""
    out = {
        "items": [item_json(p, explain) for p in answer.items],
        "model_version": answer.model_version,
        "feed_version": answer.feed_version,
        "rules_version": answer.rules_version,
        "unknown_codes": answer.unknown,
        "fallback": answer.fallback,
        "exhausted": answer.exhausted,
        "warnings": list(answer.warnings),
    }
    if recommendation_id is not None:
        out["recommendation_id"] = recommendation_id
    return out


class FoundItem(Out):
    """One of the model's items."""

    stock_code: str
    description: str
    popularity: int


class SearchOut(Out):
    """Item search results."""

    items: list[FoundItem]
    model_version: str


def search_json(found: list[Item], model_version: str) -> dict:
    """A SearchOut (an Item has exactly FoundItem's fields)."""
    return {"items": [i._asdict() for i in found], "model_version": model_version}


class ArmHealth(Out):
    """One arm of the running experiment, as this process serves it."""

    name: str
    kind: Literal["popular", "active", "staged", "version"]
    version: str | None
    share: int
    serves: str = Field(description="what answers this arm's shoppers here")
    problem: str | None = Field(description="why it is not what the arm asks for (it serves the active model)")


class ExperimentHealth(Out):
    """The running experiment as this process serves it."""

    name: str | None = Field(description="null when the experiment's record cannot be read")
    started_at: str | None
    arms: list[ArmHealth]
    degraded: str | None = Field(description="what keeps it from being served as defined, if anything")


class HealthOut(Out):
    """The served model, feed and rules (and the running experiment, if any); "degraded" (with detail) when the
    storage, a newer model or an experiment arm's model fails."""

    status: Literal["ok", "degraded"]
    model_version: str
    item_count: int
    model_created_at: str | None
    feed_version: str | None
    rules_version: str | None
    detail: str | None = None
    experiment: ExperimentHealth | None = None


def health_json(model: "Model", problem: str | None, experiment: dict | None = None) -> dict:
    """A HealthOut for the served model; problem (what fails beside it, if anything) or a degraded experiment makes
    it degraded."""
    if experiment is not None and experiment["degraded"]:
        problem = "; ".join(filter(None, (problem, f"experiment: {experiment['degraded']}")))
    out = {
        "status": "degraded" if problem else "ok",
        "model_version": model.version,
        "item_count": len(model.items),
        "model_created_at": model.manifest.get("created_at"),
        "feed_version": model.feed_version,
        "rules_version": model.rules_version,
    }
    if problem:
        out["detail"] = problem
    if experiment is not None:
        out["experiment"] = experiment
    return out


class HealthDown(Out):
    """Why no model can be served."""

    status: Literal["unavailable"]
    detail: str
    model_version: None
    item_count: int


def health_down_json(detail: str) -> dict:
    """A HealthDown."""
    return {"status": "unavailable", "detail": detail, "model_version": None, "item_count": 0}


class SampleItem(Out):
    """One item of a sample invoice."""

    stock_code: str
    description: str


class SampleBasketOut(Out):
    """A real invoice of the training data."""

    invoice: str
    date: str | None
    items: list[SampleItem]
    model_version: str


class VersionOut(Out):
    """One stored model version."""

    version: str
    complete: bool
    created_at: str | None
    items: int | None
    source_file: str | None
    evaluation: dict[str, Any] | None
    active: bool
    staged: bool
    served: bool


class ModelInfoOut(Out):
    """The served model and the stored versions (what the console's model panel shows)."""

    model_version: str
    created_at: str | None
    item_count: int
    source: dict[str, Any] | None
    counts: dict[str, Any] | None
    period: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    calibrated: bool
    feed_version: str | None
    rules_version: str | None
    categories: list[str]
    active_version: str | None
    staged_version: str | None
    versions: list[VersionOut]
