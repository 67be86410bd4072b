"""Recommend function: what to offer with a basket, item search, shoppers' events, health, and the web console with
its endpoints."""

import gc

# Cold start: importing FastAPI, pydantic and numpy leaves some 100,000 objects, and the collector would scan them
# over and over (a few dozen ms). Off while this module imports; what the import made is then frozen (never
# scanned again, as it lives as long as the process), and collection resumes for what requests create.
_collecting = gc.isenabled()
gc.disable()

import random  # noqa: E402
import time
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.responses import Response
from mangum import Mangum
from starlette.concurrency import run_in_threadpool

from recommender.core.errors import ModelUnavailable, RecommenderError
from recommender.core.feed_form import FeedLimits
from recommender.core.storage import Storage
from recommender.serving import console, cors, schemas, snapstart, web, widget
from recommender.serving.attribution import new_recommendation_id
from recommender.serving.keys import Caller
from recommender.serving.model import Model
from recommender.serving.schemas import (
    MAX_N,
    ActivateIn,
    AnalyticsOut,
    BasketIn,
    EventsIn,
    EventsOut,
    FeedSummaryOut,
    HealthDown,
    HealthOut,
    LegacyOut,
    ModelInfoOut,
    PromoteIn,
    PublishedOut,
    RecommendationsIn,
    RecommendationsOut,
    RulesCheckOut,
    RulesDraftIn,
    RulesOut,
    RulesPreviewIn,
    RulesPreviewOut,
    SampleBasketOut,
    SearchOut,
    VersionIn,
    VersionsOut,
)
from recommender.serving.users import User

app = web.create_app(
    "Recommender",
    "Complementary products for a basket. Authorize with a token from POST /token, or, on /send_data, "
    "/recommendations, /items and /events, with an API key (X-API-Key).",
)
app.add_middleware(cors.Cors)

ModelDep = Annotated[Model, Depends(web.current_model)]
UserDep = Annotated[User, Depends(web.current_user)]
CallerDep = Annotated[Caller, Depends(web.caller("recommend"))]
EventsCallerDep = Annotated[Caller, Depends(web.caller("events"))]
StorageDep = Annotated[Storage, Depends(web.get_storage)]
_rng = random.Random()
parse_basket = web.json_body(BasketIn)
BasketDep = Annotated[BasketIn, Depends(parse_basket)]
parse_recommendations = web.json_body(RecommendationsIn)
StrictBasketDep = Annotated[RecommendationsIn, Depends(parse_recommendations)]


# The two recommendation routes resolve their dependencies (caller, basket, model: in the order declared) by plain
# calls.
async def _send_data(request: Request) -> Response:
    return await send_data(
        await web.request_caller(request, "recommend"), await parse_basket(request), await web.current_model()
    )


async def _recommendations(request: Request) -> Response:
    return await recommendations(
        await web.request_caller(request, "recommend"), await parse_recommendations(request), await web.current_model()
    )


def _recommendation_id(model: Model, arm: str | None) -> str:
    """The id of an answer of model (in experiment arm) given now: what events name to be attributed to it."""
    return new_recommendation_id(model.version, time.time_ns() // 1_000_000, arm)


@web.post_resolved(
    app,
    "/send_data",
    _send_data,
    response_model=LegacyOut,
    summary="Recommendations in the original system's format",
    openapi_extra=web.json_body_openapi(BasketIn),
    responses=web.errors(401, 403, 413, 422, 429, 503),
)
async def send_data(_caller: CallerDep, basket: BasketDep, model: ModelDep) -> web.FastJSON:
    """Exactly n items to offer with the basket (fewer only if fewer are eligible), never one of its own; the
    options of /recommendations work here too. The answer's recommendation_id is in the X-Recommendation-Id header."""
    options = basket.options(explain=False)
    # A running experiment answers with the shopper's arm (the active model when the request names no shopper).
    model, arm = web.experiment_arm(model, basket.user_id or basket.session_id)
    answer = model.recommend(basket.product_list, basket.n, options)
    return web.FastJSON(
        schemas.legacy_json(answer, options is not None and options.explain),
        headers={"X-Recommendation-Id": _recommendation_id(model, arm)},
    )


@web.post_resolved(
    app,
    "/recommendations",
    _recommendations,
    response_model=RecommendationsOut,
    summary="Recommendations, self-describing",
    openapi_extra=web.json_body_openapi(RecommendationsIn),
    responses=web.errors(401, 403, 413, 422, 429, 503),
)
async def recommendations(_caller: CallerDep, basket: StrictBasketDep, model: ModelDep) -> web.FastJSON:
    """The same items as /send_data, each with its confidence, source and feed attributes (and with explain, the
    default, its reasons); the model, feed and rules versions, the unknown codes, whether popularity answered,
    whether fewer than n items were eligible, and the answer's recommendation_id (for events)."""
    options = basket.options(explain=True)
    model, arm = web.experiment_arm(model, basket.user_id or basket.session_id)
    answer = model.recommend(basket.product_list, basket.n, options)
    return web.FastJSON(
        schemas.answer_json(answer, options is not None and options.explain, _recommendation_id(model, arm))
    )


@app.post(
    "/events",
    response_model=EventsOut,
    summary="Record what shoppers did: strips seen, clicks, add-to-carts, purchases",
    openapi_extra=web.json_body_openapi(EventsIn),
    responses=web.errors(401, 403, 413, 422, 429, 503),
)
async def events(request: Request, caller: EventsCallerDep, settings: web.SettingsDep) -> web.FastJSON:
    """A batch of events, each answered accepted, duplicate (its event_id was stored already) or refused with the
    reason; the accepted ones are durably stored before this answers (503 with Retry-After, for the whole batch,
    when they cannot be)."""
    ingest = web.event_ingest(settings)
    body = await request.body()
    # Off the event loop: the batch is checked, then written and fsynced (or put to S3) before the answer.
    return web.FastJSON(await run_in_threadpool(ingest.ingest, body, f"{caller.kind}:{caller.name}"))


@app.get(
    "/items",
    response_model=SearchOut,
    summary="Search the model's items by code prefix or description words",
    responses=web.errors(401, 403, 413, 422, 429, 503),
)
async def items(
    _caller: CallerDep,
    model: ModelDep,
    q: Annotated[str, Query(max_length=200)] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_N)] = 20,
) -> web.FastJSON:
    """Items whose code starts with q, then items whose description holds every word of q; popular first."""
    # Off the event loop: a search is a few milliseconds at most, but the first one of a model builds its index.
    found = await run_in_threadpool(model.items.search, q, limit)
    return web.FastJSON(schemas.search_json(found, model.version))


@app.get(
    "/health",
    summary="Which model this process serves (no token needed)",
    response_model=HealthOut,
    responses={503: {"model": HealthDown, "description": "no model can be served: detail says why"}, **web.errors(413)},
)
async def health() -> web.FastJSON:
    """The model, feed and rules this process serves (503 with the reason when there is none); no token needed."""
    try:
        model = await web.current_model()
    except RecommenderError as err:
        return web.FastJSON(schemas.health_down_json(web.public_detail(err)), status_code=ModelUnavailable.status_code)
    # A model in memory answers even when the storage fails; "degraded" says so, with the reason (not where).
    holder = web.model_holder(web.get_settings())
    problem = holder.error
    return web.FastJSON(
        schemas.health_json(model, problem and web.public_text(problem), holder.health(web.public_text))
    )


@app.get(
    "/sample_basket",
    response_model=SampleBasketOut,
    summary="A random invoice of the training data",
    responses=web.errors(401, 403, 404, 413, 503),
)
async def sample_basket(_user: UserDep, model: ModelDep, storage: StorageDep) -> web.FastJSON:
    """One of the real invoices the served model keeps from its training data, drawn at random."""
    from recommender.serving import real_baskets  # what only the console asks for is imported on its first use

    return web.FastJSON(real_baskets.random_basket(model, storage, _rng))


@app.get(
    "/model",
    response_model=ModelInfoOut,
    summary="The served model, its training figures and the versions",
    responses=web.errors(401, 403, 413, 503),
)
async def model_panel(_user: UserDep, model: ModelDep, storage: StorageDep) -> web.FastJSON:
    """Version, training time and counts, evaluation figures when the model has them, and every stored version."""
    from recommender.serving import model_info

    return web.FastJSON(await run_in_threadpool(model_info.describe, model, storage))


# --- The console's workplace: rules (right "rules"). Imported on first use: shoppers' requests never need it.
RulesRight = Annotated[User, Depends(web.require("rules"))]


@app.get(
    "/rules",
    response_model=RulesOut,
    summary="The merchandising rules in force",
    responses=web.errors(401, 403, 413, 503),
)
async def rules_active(_user: UserDep, storage: StorageDep) -> RulesOut:
    """The active rules version as a rules file's document, its summary and warnings, and the earlier versions."""
    from recommender.serving import rules_editor

    return RulesOut(**await run_in_threadpool(rules_editor.current, storage))


@app.post(
    "/rules/check",
    response_model=RulesCheckOut,
    summary="Check a draft of the rules as make rules would",
    openapi_extra=web.json_body_openapi(RulesDraftIn),
    responses=web.errors(401, 403, 413, 422, 503),
)
async def rules_check(
    _user: RulesRight,
    draft: Annotated[RulesDraftIn, Depends(web.json_body(RulesDraftIn))],
    model: ModelDep,
    storage: StorageDep,
) -> RulesCheckOut:
    """Whether the draft can be published; if not, the place and the problem (as make rules says them)."""
    from recommender.serving import rules_editor

    result = await run_in_threadpool(rules_editor.checked, draft.rules, storage, model, draft.yaml)
    result.pop("rules", None)
    return RulesCheckOut(**result)


@app.post(
    "/rules/preview",
    response_model=RulesPreviewOut,
    summary="What a draft of the rules changes, on real baskets",
    openapi_extra=web.json_body_openapi(RulesPreviewIn),
    responses=web.errors(401, 403, 413, 422, 503),
)
async def rules_preview(
    _user: RulesRight, draft: Annotated[RulesPreviewIn, Depends(web.json_body(RulesPreviewIn))], storage: StorageDep
) -> RulesPreviewOut:
    """Each answer, for sample invoices of the training data and the baskets given, under the rules in force and
    under the draft (both as of a time), the changed items marked, and the counts; nothing is stored."""
    from recommender.serving import rules_editor

    await web.current_model()  # the model loaded (or why not), before previewing with it
    holder = web.model_holder(web.get_settings())
    result = await run_in_threadpool(
        rules_editor.preview, holder, storage, draft.rules, draft.baskets, draft.as_of, draft.samples, text=draft.yaml
    )
    return RulesPreviewOut(**result)


@app.post(
    "/rules",
    response_model=PublishedOut,
    summary="Publish a draft of the rules (as make rules)",
    openapi_extra=web.json_body_openapi(RulesDraftIn),
    responses=web.errors(401, 403, 413, 422, 503),
)
async def rules_publish(
    _user: RulesRight,
    draft: Annotated[RulesDraftIn, Depends(web.json_body(RulesDraftIn))],
    model: ModelDep,
    storage: StorageDep,
    settings: web.SettingsDep,
) -> PublishedOut:
    """Validated in full and stored as a new rules version, activated: serving picks it up within
    MODEL_POLL_SECONDS. A draft with any error is refused (422) and the rules in force stay."""
    from recommender.serving import rules_editor

    published = await run_in_threadpool(
        rules_editor.publish_draft,
        storage,
        model,
        draft.rules,
        settings.keep_versions,
        settings.max_rules_stored_bytes,
        draft.yaml,
    )
    return PublishedOut(**published)


@app.post(
    "/rules/activate",
    response_model=PublishedOut,
    summary="Put an earlier rules version in force again",
    openapi_extra=web.json_body_openapi(VersionIn),
    responses=web.errors(401, 403, 404, 409, 413, 422, 503),
)
async def rules_activate(
    _user: RulesRight, body: Annotated[VersionIn, Depends(web.json_body(VersionIn))], storage: StorageDep
) -> PublishedOut:
    """Any stored rules version (GET /versions lists them) is the one in force; the one it replaces is remembered
    for roll back. Serving follows within MODEL_POLL_SECONDS."""
    from recommender.serving import model_versions

    return PublishedOut(**await run_in_threadpool(model_versions.activate_other, storage, "rules", body.version))


@app.post(
    "/rules/rollback",
    response_model=PublishedOut,
    summary="Re-activate the previous rules version",
    responses=web.errors(401, 403, 409, 413, 503),
)
async def rules_rollback(_user: RulesRight, storage: StorageDep) -> PublishedOut:
    """As make rules_rollback: the version active before the current one is active again."""
    from recommender.serving import rules_editor

    return PublishedOut(**await run_in_threadpool(rules_editor.roll_back, storage))


# --- The console's workplace: model versions (right "promote"; "force" past the gate's refusal).
PromoteRight = Annotated[User, Depends(web.require("promote"))]


@app.get(
    "/versions",
    response_model=VersionsOut,
    summary="Model versions with their labels and quality, and the feed and rules versions",
    responses=web.errors(401, 403, 413, 503),
)
async def versions(_user: UserDep, storage: StorageDep) -> VersionsOut:
    """Every model version, newest first: training file, dates, products, engine, held-out quality in words and
    figures, which is active and which staged."""
    from recommender.serving import model_versions

    return VersionsOut(**await run_in_threadpool(model_versions.listing, storage))


@app.post(
    "/versions/promote",
    response_model=PublishedOut,
    summary="Activate the staged model, through the activation gate (as make promote)",
    openapi_extra=web.json_body_openapi(PromoteIn),
    responses=web.errors(401, 403, 409, 413, 422, 503),
)
async def versions_promote(
    user: PromoteRight,
    body: Annotated[PromoteIn, Depends(web.json_body(PromoteIn))],
    storage: StorageDep,
    settings: web.SettingsDep,
) -> PublishedOut:
    """The gate compares the staged model with the active one; 409 with its comparison when it refuses (force,
    an admin's right, activates it anyway)."""
    from recommender.serving import model_versions

    done = await run_in_threadpool(model_versions.promote, storage, user, body.force, settings.model_gate_margin)
    return PublishedOut(**done)


@app.post(
    "/versions/activate",
    response_model=PublishedOut,
    summary="Activate a stored model version, through the activation gate (as make activate)",
    openapi_extra=web.json_body_openapi(ActivateIn),
    responses=web.errors(401, 403, 404, 409, 413, 422, 503),
)
async def versions_activate(
    user: PromoteRight,
    body: Annotated[ActivateIn, Depends(web.json_body(ActivateIn))],
    storage: StorageDep,
    settings: web.SettingsDep,
) -> PublishedOut:
    """The gate compares the version with the active one; 409 with its comparison when it refuses (force, an
    admin's right, activates it anyway)."""
    from recommender.serving import model_versions

    done = await run_in_threadpool(
        model_versions.activate, storage, user, body.version, body.force, settings.model_gate_margin
    )
    return PublishedOut(**done)


@app.post(
    "/versions/rollback",
    response_model=PublishedOut,
    summary="Re-activate the previous model version (as make rollback)",
    responses=web.errors(401, 403, 409, 413, 503),
)
async def versions_rollback(_user: PromoteRight, storage: StorageDep) -> PublishedOut:
    """The model version active before the current one is active again."""
    from recommender.serving import model_versions

    return PublishedOut(**await run_in_threadpool(model_versions.roll_back, storage))


# --- The console's workplace: the product feed (right "feed"). The file is the request body, its name a parameter.
FeedRight = Annotated[User, Depends(web.require("feed"))]
FEED_BODY = {
    "requestBody": {
        "required": True,
        "description": "the feed file as it is (.csv, .csv.gz, .tsv, .tsv.gz, .xlsx), at most FEED_UPLOAD_MAX_BYTES",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
FeedName = Annotated[str, Query(min_length=1, max_length=200, description="the file's name: its type is its ending")]


async def _feed_limits(settings: web.SettingsDep) -> FeedLimits:
    """MAX_FEED_ROWS, MAX_FEED_BYTES and ENCODING, as make feed reads a file with them."""
    return FeedLimits(settings.max_feed_rows, settings.max_feed_bytes, settings.encoding)


FeedLimitsDep = Annotated[FeedLimits, Depends(_feed_limits)]


@app.post(
    "/feed/preview",
    response_model=FeedSummaryOut,
    summary="What an uploaded product feed holds and changes, before it is published",
    openapi_extra=FEED_BODY,
    responses=web.errors(401, 403, 413, 422, 503),
)
async def feed_preview(
    _user: FeedRight, request: Request, name: FeedName, storage: StorageDep, limits: FeedLimitsDep
) -> FeedSummaryOut:
    """The file checked as make feed checks it (422 naming the first bad line), and what it changes against the
    feed in force: products added, removed, out of stock, back in stock, prices changed by more than 20%, unknown
    to the model. Nothing is stored."""
    from recommender.serving import feed_upload

    data = await request.body()
    return FeedSummaryOut(**await run_in_threadpool(feed_upload.summary, storage, name, data, limits))


@app.post(
    "/feed",
    response_model=PublishedOut,
    summary="Publish an uploaded product feed (as make feed)",
    openapi_extra=FEED_BODY,
    responses=web.errors(401, 403, 413, 422, 503),
)
async def feed_publish(
    _user: FeedRight,
    request: Request,
    name: FeedName,
    storage: StorageDep,
    limits: FeedLimitsDep,
    settings: web.SettingsDep,
) -> PublishedOut:
    """Checked in full, stored as a new feed version and activated: serving follows it within MODEL_POLL_SECONDS."""
    from recommender.serving import feed_upload

    data = await request.body()
    published = await run_in_threadpool(feed_upload.publish_upload, storage, name, data, limits, settings.keep_versions)
    return PublishedOut(**published)


@app.post(
    "/feed/activate",
    response_model=PublishedOut,
    summary="Put an earlier product feed version in force again",
    openapi_extra=web.json_body_openapi(VersionIn),
    responses=web.errors(401, 403, 404, 409, 413, 422, 503),
)
async def feed_activate(
    _user: FeedRight, body: Annotated[VersionIn, Depends(web.json_body(VersionIn))], storage: StorageDep
) -> PublishedOut:
    """Any stored feed version (GET /versions lists them) is the one in force; the one it replaces is remembered
    for roll back. Serving follows within MODEL_POLL_SECONDS."""
    from recommender.serving import model_versions

    return PublishedOut(**await run_in_threadpool(model_versions.activate_other, storage, "feed", body.version))


@app.post(
    "/feed/rollback",
    response_model=PublishedOut,
    summary="Re-activate the previous product feed version",
    responses=web.errors(401, 403, 409, 413, 503),
)
async def feed_rollback(_user: FeedRight, storage: StorageDep) -> PublishedOut:
    """As make feed_rollback: the feed version active before the current one is active again."""
    from recommender.serving import feed_upload

    return PublishedOut(**await run_in_threadpool(feed_upload.roll_back, storage))


def _preflight_route(path: str, methods: str) -> None:
    async def preflight(request: Request) -> Response:
        """The CORS preflight of a route API keys open: allowed for the origins its keys list."""
        return await cors.preflight(request, methods)

    app.options(path, status_code=204, response_class=Response, responses=web.errors(403, 503))(preflight)


# CORS preflights on exactly the routes API keys open (the routes in template.yaml too).
for _path, _methods in (("/send_data", "POST"), ("/recommendations", "POST"), ("/items", "GET"), ("/events", "POST")):
    _preflight_route(_path, _methods)


@app.get(
    "/analytics",
    response_model=AnalyticsOut,
    summary="What the recommendations sell: the shop, the experiment's arms against control, the top pairs",
    responses=web.errors(401, 403, 404, 413, 422),
)
async def analytics_panel(
    _user: UserDep,
    storage: StorageDep,
    experiment: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9A-Za-z_-]+$")] = None,
) -> web.FastJSON:
    """The figures of the last `make report` (users only, never API keys): the last 7 and 30 days, the running
    experiment (or the one named) with its intervals, split check and headline, the most clicked pairs."""
    from recommender.serving import analytics

    return web.FastJSON(await run_in_threadpool(analytics.answer, storage, experiment))


def _console_route(path: str) -> None:
    async def console_file(if_none_match: Annotated[str | None, Header()] = None) -> Response:
        """A file of the web console, with its security headers."""
        return console.response(path, if_none_match)

    app.get(path, include_in_schema=False)(console_file)


# The console: one page and its two files, the same on AWS as on `make run` (routes in template.yaml).
for _path in console.FILES:
    _console_route(_path)


@app.get(widget.PATH, include_in_schema=False)
async def widget_script(
    accept_encoding: Annotated[str | None, Header()] = None, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    """The shop widget's script (docs/shop.md), for any site's pages to load."""
    return widget.response(accept_encoding, if_none_match)


handler = Mangum(app, lifespan="off")
# PRELOAD_MODEL (set by template.yaml with SnapStart): the model loaded now, so that the snapshot holds it.
snapstart.preload(handler, _rng)
gc.freeze()
if _collecting:
    gc.enable()
