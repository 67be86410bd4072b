"""The console's workplace: the merchandising rules (right "rules"), as make rules and make rules_rollback do them.

What these routes run (rules_editor) is imported on first use: shoppers' requests never need it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.concurrency import run_in_threadpool

from recommender.core.settings import get_settings
from recommender.serving import web
from recommender.serving.routes import ModelDep, Routes, StorageDep, UserDep
from recommender.serving.users import User
from recommender.serving.workplace_schemas import (
    PublishedOut,
    RulesCheckOut,
    RulesDraftIn,
    RulesOut,
    RulesPreviewIn,
    RulesPreviewOut,
    VersionIn,
)

routes = Routes()
RulesRight = Annotated[User, Depends(web.require("rules"))]


@routes.get(
    "/rules",
    response_model=RulesOut,
    summary="The merchandising rules in force",
    responses=web.errors(401, 403, 413, 503),
)
async def rules_active(_user: UserDep, storage: StorageDep) -> RulesOut:
    """The active rules version as a rules file's document, its summary and warnings, and the earlier versions."""
    from recommender.serving import rules_editor

    return RulesOut(**await run_in_threadpool(rules_editor.current, storage))


@routes.post(
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


@routes.post(
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
    holder = web.model_holder(get_settings())
    result = await run_in_threadpool(
        rules_editor.preview, holder, storage, draft.rules, draft.baskets, draft.as_of, draft.samples, text=draft.yaml
    )
    return RulesPreviewOut(**result)


@routes.post(
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


@routes.post(
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


@routes.post(
    "/rules/rollback",
    response_model=PublishedOut,
    summary="Re-activate the previous rules version",
    responses=web.errors(401, 403, 409, 413, 503),
)
async def rules_rollback(_user: RulesRight, storage: StorageDep) -> PublishedOut:
    """As make rules_rollback: the version active before the current one is active again."""
    from recommender.serving import rules_editor

    return PublishedOut(**await run_in_threadpool(rules_editor.roll_back, storage))
