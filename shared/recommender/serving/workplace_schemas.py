"""The console's workplace API: rules drafts and their preview, published versions, the feed's change summary."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, model_validator
from pydantic_core import PydanticCustomError

from recommender.serving.schemas import MAX_BASKET, Out, SampleItem

# --- The console's workplace: rules drafts and their preview, versions -------------------------------------------


class RulesDraftIn(BaseModel):
    """A draft of the merchandising rules: the document a rules file holds (block, do_not_pair, pin, boost, bury;
    make rules_schema prints its JSON Schema), as JSON (rules) or as the YAML text of a rules file (yaml)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    rules: dict[str, Any] | None = Field(None, description="the rules file's document (keys block, do_not_pair, ...)")
    yaml: StrictStr | None = Field(
        None,
        max_length=1 << 20,
        description="instead of rules: the rules file's text, read as make rules reads a file (at most 1 MiB)",
    )

    @model_validator(mode="after")
    def _one_form(self) -> "RulesDraftIn":
        if self.rules is not None and self.yaml is not None:
            raise PydanticCustomError("rules_form", "give rules or yaml, not both")
        if not {"rules", "yaml"} & self.model_fields_set:
            raise PydanticCustomError("rules_form", "give the draft as rules (its document) or yaml (its text)")
        return self


def _date_time_text(value: Any) -> Any:
    """A date-time as the schema says: ISO 8601 text (pydantic alone would also take a number of seconds)."""
    if value is not None and not isinstance(value, (str, datetime)):
        raise ValueError("a date and time as text, such as 2026-12-24T00:00:00Z")
    return value


class RulesPreviewIn(RulesDraftIn):
    """A draft and what to preview it on."""

    baskets: Annotated[list[Annotated[list[StrictStr], Field(max_length=MAX_BASKET)]], Field(max_length=20)] = Field(
        default_factory=list, description="baskets to answer besides the model's sample invoices (stock codes)"
    )
    as_of: Annotated[datetime | None, BeforeValidator(_date_time_text)] = Field(
        None, description="apply the rules in force at this time (default: now)"
    )
    samples: Annotated[int, Field(ge=0, le=100, strict=True)] = Field(
        20, description="how many sample invoices to answer"
    )


class RuleProblem(Out):
    """Where a draft is wrong and why, in the words of make rules."""

    place: str = Field(description='the entry and field, such as "pin[0].position", or "rules"')
    message: str
    line: int | None = Field(None, description="for a draft given as yaml: the line of the text the problem is at")


class RulesCheckOut(Out):
    """Whether a draft can be published."""

    ok: bool
    error: RuleProblem | None
    summary: list[str]
    warnings: list[str]
    document: dict[str, Any] | None = Field(
        None,
        description="for a draft given as yaml: its document as JSON (null when the text is not YAML or not a mapping)",
    )


class RulesOut(Out):
    """The active rules version (version null when none) as a document, and the earlier versions."""

    version: str | None
    created_at: str | None = None
    source: str | None = Field(
        None, description="the file it was uploaded from (console.json or console.yaml from the console)"
    )
    rules: dict[str, Any]
    summary: list[str]
    warnings: list[str]
    previous: list[str] = Field(description="earlier versions, most recent first (roll back goes to the first)")


class PreviewItem(Out):
    """One recommended item of an answer in a preview."""

    stock_code: str
    description: str
    source: str = Field(description="model, popular or pinned")
    change: str | None = Field(None, description="after the draft: new, pinned, moved, same; removed")
    was: int | None = Field(None, description="a moved item's position before (1: first)")


class PreviewCounts(Out):
    """What the draft changes in one answer."""

    removed: int
    pinned: int
    moved: int
    added: int


class PreviewBasket(Out):
    """One basket's answers under the rules in force and under the draft."""

    invoice: str = Field(description='the sample invoice, or "typed"')
    basket: list[SampleItem]
    before: list[PreviewItem]
    after: list[PreviewItem]
    removed: list[PreviewItem]
    changed: bool
    counts: PreviewCounts


class PreviewTotals(Out):
    """What the draft changes over every basket previewed."""

    baskets: int
    affected: int
    removed: int
    pinned: int
    moved: int
    added: int


class RulesPreviewOut(Out):
    """A draft's effect, before anything is published."""

    as_of: str
    model_version: str
    rules_version: str | None
    counts: PreviewTotals
    summary: list[str]
    warnings: list[str]
    baskets: list[PreviewBasket]


class PublishedOut(Out):
    """The version a publish, activation or roll back made active."""

    version: str
    summary: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    comparison: str | None = Field(None, description="the activation gate's comparison, for a model")


class ModelVersionOut(Out):
    """One model version as the Versions page shows it."""

    version: str
    state: Literal["active", "staged", ""]
    created_at: str | None
    file: str | None = Field(description="the training file")
    first: str | None = Field(description="the first purchase it learned from")
    last: str | None
    products: int | None
    engine: str | None
    quality: str | None = Field(description="HR@10 in words, against best-sellers")
    hr: float | None = Field(description="HR@10: share of held-out baskets whose bought item was in the top 10")
    mrr: float | None = Field(description="MRR@10: mean reciprocal rank of the bought item in the top 10")
    problem: str | None = Field(description="why it cannot be activated (damaged, incomplete), if so")


class OtherVersionOut(Out):
    """A feed or rules version."""

    version: str
    state: Literal["active", ""]
    created_at: str | None = None
    file: str | None = Field(None, description="the file it was published from (console.json/.yaml: the console)")
    label: str | None = Field(None, description='what it holds: "4,070 products", "published without warnings"')
    problem: str | None = Field(None, description="why it cannot be activated (incomplete, damaged)")


class VersionsOut(Out):
    """Every model version, newest first, the ones a roll back goes to, and the feed and rules versions."""

    models: list[ModelVersionOut]
    previous: list[str] = Field(description="model versions active before, most recent first")
    feeds: list[OtherVersionOut]
    rules: list[OtherVersionOut]
    feeds_previous: list[str] = Field(default_factory=list, description="feed versions in force before, latest first")
    rules_previous: list[str] = Field(default_factory=list, description="rules versions in force before, latest first")


class ActivateIn(BaseModel):
    """Which model version to activate, and whether past the gate's refusal (an admin's right, "force")."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    version: StrictStr = Field(min_length=1, max_length=100, description="a version, or a unique beginning of one")
    force: bool = False


class VersionIn(BaseModel):
    """Which feed or rules version to put in force."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    version: StrictStr = Field(min_length=1, max_length=100, description="a version, or a unique beginning of one")


class PromoteIn(BaseModel):
    """Whether to promote the staged model past the gate's refusal (an admin's right, "force")."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    force: bool = False


class CodesChanged(Out):
    """How many products a feed changes in one way, and the first of their codes."""

    count: int
    codes: list[str]


class PriceChange(Out):
    """A price changed by more than 20%."""

    stock_code: str
    before: float
    after: float


class PriceChanges(Out):
    """Prices changed by more than 20%: how many, and the first ones."""

    count: int
    items: list[PriceChange]


class FeedChanges(Out):
    """What an uploaded feed changes against the feed in force."""

    products: int
    added: CodesChanged
    removed: CodesChanged
    out_of_stock: CodesChanged = Field(description="out of stock now, and not before")
    back_in_stock: CodesChanged
    unknown_to_model: CodesChanged = Field(description="products the served model does not know (kept for later)")
    price_changes: PriceChanges


class FeedSummaryOut(Out):
    """An uploaded feed checked as make feed checks it, and what it would change; nothing is stored."""

    file: str
    current_version: str | None
    lines: list[str] = Field(description="what make feed prints of it")
    changes: FeedChanges
