"""The console's workplace: the model versions (right "promote"; "force" past the activation gate's refusal), as
make promote, make activate and make rollback do them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.concurrency import run_in_threadpool

from recommender.serving import web
from recommender.serving.routes import Routes, StorageDep, UserDep
from recommender.serving.users import User
from recommender.serving.workplace_schemas import ActivateIn, PromoteIn, PublishedOut, VersionsOut

routes = Routes()
PromoteRight = Annotated[User, Depends(web.require("promote"))]


@routes.get(
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


@routes.post(
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


@routes.post(
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


@routes.post(
    "/versions/rollback",
    response_model=PublishedOut,
    summary="Re-activate the previous model version (as make rollback)",
    responses=web.errors(401, 403, 409, 413, 503),
)
async def versions_rollback(_user: PromoteRight, storage: StorageDep) -> PublishedOut:
    """The model version active before the current one is active again."""
    from recommender.serving import model_versions

    return PublishedOut(**await run_in_threadpool(model_versions.roll_back, storage))
