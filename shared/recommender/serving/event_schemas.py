"""The event API's requests and answers (POST /events) and the analytics' figures (GET /analytics)."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from recommender.serving.schemas import Out, Text

# ---------------------------------------------------------------------------------------------------------------
# Events (POST /events): the request's models check each event on its own (serving.events), so that one bad event
# is refused alone; the batch itself is read by hand.
# ---------------------------------------------------------------------------------------------------------------
MAX_EVENT_ITEMS = 1000
MAX_QUANTITY = 1_000_000
MAX_EVENT_PRICE = 1e9
MAX_EVENT_VALUE = 1e12


class EventItemIn(BaseModel):
    """One product an event is about."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    stock_code: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY)] | None = None
    price: Annotated[float, Field(ge=0, le=MAX_EVENT_PRICE, allow_inf_nan=False)] | None = Field(
        None, description="unit price"
    )


class EventIn(BaseModel):
    """One thing a shopper did: saw a recommendation strip, clicked a product, added to the cart, bought."""

    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    event_id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = Field(
        description="the client's id of this event: a re-sent event with the same id is counted once"
    )
    type: Literal["view", "click", "add_to_cart", "purchase"]
    ts: Annotated[StrictStr, Field(max_length=40)] | int = Field(
        description="when it happened: ISO 8601 with a zone (Z or +01:00), or unix time in milliseconds; "
        "at most 30 days ago and 1 day ahead"
    )
    session_id: Text
    user_id: Text | None = None
    recommendation_id: Annotated[StrictStr, Field(max_length=160)] | None = Field(
        None, description="the recommendation_id of the answer that led to this event"
    )
    items: Annotated[list[EventItemIn], Field(min_length=1, max_length=MAX_EVENT_ITEMS)]
    value: Annotated[float, Field(ge=-MAX_EVENT_VALUE, le=MAX_EVENT_VALUE, allow_inf_nan=False)] | None = Field(
        None, description="the event's worth (a purchase's total)"
    )
    currency: Annotated[StrictStr, Field(pattern=r"^[A-Za-z]{3}$")] | None = Field(
        None, description="ISO 4217 code of value and prices"
    )


class EventsIn(BaseModel):
    """A batch of events (at most EVENTS_MAX_BATCH, 500 by default)."""

    model_config = ConfigDict(defer_build=True)

    events: list[EventIn]


class EventResult(Out):
    """What became of one event of a batch."""

    event_id: str | None = Field(description="as sent (null when it was not a string)")
    status: Literal["accepted", "duplicate", "refused"]
    reason: str | None = Field(None, description="why it was refused, or why it counts as a duplicate")


class EventsOut(Out):
    """The fate of each event of a batch, in the order sent, and the counts."""

    results: list[EventResult]
    accepted: int
    duplicates: int
    refused: int


# ---------------------------------------------------------------------------------------------------------------
# Analytics (GET /analytics): the figures serving.analytics builds from the last report's sums.


class FiguresOut(Out):
    """A group of sessions (the shop over some days, an arm, an arm on one day): counts, and each metric with its
    95% interval (null when there are too few sessions)."""

    sessions: int
    answers: int
    impressions: int
    clicks: int
    add_to_carts: int
    purchases: int
    revenue: float
    revenue_per_session: float | None
    revenue_per_session_low: float | None
    revenue_per_session_high: float | None
    click_through: float | None
    click_through_low: float | None
    click_through_high: float | None
    add_to_cart_rate: float | None
    add_to_cart_rate_low: float | None
    add_to_cart_rate_high: float | None
    conversion_rate: float | None
    conversion_rate_low: float | None
    conversion_rate_high: float | None
    revenue_per_1000_impressions: float | None
    revenue_per_1000_impressions_low: float | None
    revenue_per_1000_impressions_high: float | None


class ComparisonOut(Out):
    """An arm against control on one metric: relative difference (0.031 = +3.1%), its fixed-horizon 95% interval,
    its always-valid interval, and the sessions still needed to detect a 2% difference (0 once it is clear)."""

    metric: str
    arm: str
    control: str
    lift: float | None
    low: float | None
    high: float | None
    sequential_low: float | None
    sequential_high: float | None
    significant: bool
    sequentially_significant: bool
    sessions_needed: int | None


class SampleRatioOut(Out):
    """Sessions per arm against the configured shares (chi-square); broken when p < 0.001."""

    chi2: float
    p_value: float
    broken: bool
    observed: dict[str, int]
    expected: dict[str, float]


class ArmOut(Out):
    """An arm of the experiment and its figures."""

    name: str
    kind: str | None
    version: str | None
    share: float | None
    figures: FiguresOut


class DayOut(Out):
    """One day of an experiment: each arm's figures."""

    day: str
    arms: dict[str, FiguresOut]


class ExperimentOut(Out):
    """An experiment's arms, each against control, the split check and the headline sentence."""

    name: str
    running: bool
    started_at: str | None
    stopped_at: str | None
    control: str | None
    arms: list[ArmOut]
    comparisons: list[ComparisonOut]
    sample_ratio: SampleRatioOut | None
    headline: str
    warnings: list[str]  # arms that cannot serve their model (they serve the active one)
    days: list[DayOut]


class PairOut(Out):
    """A recommended item clicked in sessions whose cart held another: how many sessions."""

    held: str
    clicked: str
    sessions: int


class AnalyticsOut(Out):
    """What the recommendations sell, as of the last `make report` (computed_at; null before the first)."""

    computed_at: str | None
    first_day: str | None
    last_day: str | None
    window_hours: float | None
    message: str | None
    shop: dict[str, FiguresOut]
    experiment: ExperimentOut | None
    pairs: list[PairOut]
