"""The console's workplace: the product feed (right "feed"), as make feed and make feed_rollback do them. The file
is the request body, its name a parameter."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from recommender.core.feed_form import FeedLimits
from recommender.serving import web
from recommender.serving.routes import Routes, StorageDep
from recommender.serving.users import User
from recommender.serving.workplace_schemas import FeedSummaryOut, PublishedOut, VersionIn

routes = Routes()
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


@routes.post(
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


@routes.post(
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


@routes.post(
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


@routes.post(
    "/feed/rollback",
    response_model=PublishedOut,
    summary="Re-activate the previous product feed version",
    responses=web.errors(401, 403, 409, 413, 503),
)
async def feed_rollback(_user: FeedRight, storage: StorageDep) -> PublishedOut:
    """As make feed_rollback: the feed version active before the current one is active again."""
    from recommender.serving import feed_upload

    return PublishedOut(**await run_in_threadpool(feed_upload.roll_back, storage))
