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
from recommender.core.settings import get_settings
from recommender.serving import callers, console, cors, schemas, snapstart, web, widget
from recommender.serving.attribution import new_recommendation_id
from recommender.serving.event_schemas import AnalyticsOut, EventsIn, EventsOut
from recommender.serving.fast_path import FastRoute
from recommender.serving.http_errors import public_detail, public_text
from recommender.serving.keys import Caller
from recommender.serving.model import Model
from recommender.serving.resources import event_ingest, experiment_arm
from recommender.serving.routes import ModelDep, StorageDep, UserDep, feed, rules, versions
from recommender.serving.schemas import (
    MAX_N,
    BasketIn,
    HealthDown,
    HealthOut,
    LegacyOut,
    ModelInfoOut,
    RecommendationsIn,
    RecommendationsOut,
    SampleBasketOut,
    SearchOut,
)

app = web.create_app(
    "Recommender",
    "Complementary products for a basket. Authorize with a token from POST /token, or, on /send_data, "
    "/recommendations, /items and /events, with an API key (X-API-Key).",
)
app.add_middleware(cors.Cors)

CallerDep = Annotated[Caller, Depends(callers.caller("recommend"))]
EventsCallerDep = Annotated[Caller, Depends(callers.caller("events"))]
_rng = random.Random()
parse_basket = web.json_body(BasketIn)
BasketDep = Annotated[BasketIn, Depends(parse_basket)]
parse_recommendations = web.json_body(RecommendationsIn)
StrictBasketDep = Annotated[RecommendationsIn, Depends(parse_recommendations)]


# The two recommendation routes are answered on ASGI (fast_routes, below) but for browsers' requests; for those, the
# FastAPI routes resolve their dependencies (caller, basket, model: in the order declared) by plain calls.
async def _send_data(request: Request) -> Response:
    return await send_data(
        await callers.request_caller(request, "recommend"), await parse_basket(request), await web.current_model()
    )


async def _recommendations(request: Request) -> Response:
    return await recommendations(
        await callers.request_caller(request, "recommend"),
        await parse_recommendations(request),
        await web.current_model(),
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
    content, headers = _legacy_answer(basket, model)
    return web.FastJSON(content, headers=headers)


def _legacy_answer(basket: BasketIn, model: Model) -> tuple[dict, dict[str, str]]:
    options = basket.options(explain=False)
    # A running experiment answers with the shopper's arm (the active model when the request names no shopper).
    model, arm = experiment_arm(model, basket.user_id or basket.session_id)
    answer = model.recommend(basket.product_list, basket.n, options)
    content = schemas.legacy_json(answer, options is not None and options.explain)
    return content, {"X-Recommendation-Id": _recommendation_id(model, arm)}


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
    content, headers = _full_answer(basket, model)
    return web.FastJSON(content, headers=headers)


def _full_answer(basket: RecommendationsIn, model: Model) -> tuple[dict, None]:
    options = basket.options(explain=True)
    model, arm = experiment_arm(model, basket.user_id or basket.session_id)
    answer = model.recommend(basket.product_list, basket.n, options)
    return schemas.answer_json(answer, options is not None and options.explain, _recommendation_id(model, arm)), None


# Both answered straight on ASGI (serving.fast_path) but for browsers' requests (CORS): the same checks and answers.
app.fast_routes[("POST", "/send_data")] = FastRoute(app, "recommend", BasketIn, _legacy_answer)
app.fast_routes[("POST", "/recommendations")] = FastRoute(app, "recommend", RecommendationsIn, _full_answer)


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
    ingest = event_ingest(settings)
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
        return web.FastJSON(schemas.health_down_json(public_detail(err)), status_code=ModelUnavailable.status_code)
    # A model in memory answers even when the storage fails; "degraded" says so, with the reason (not where).
    holder = web.model_holder(get_settings())
    problem = holder.error
    return web.FastJSON(schemas.health_json(model, problem and public_text(problem), holder.health(public_text)))


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


# The console's workplace, each part with its right: the rules, the model versions, the product feed.
for _routes in (rules.routes, versions.routes, feed.routes):
    _routes.add_to(app)


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
