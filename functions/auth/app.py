"""Auth function: exchanges a username and password for a bearer token, and says whom a token belongs to."""

import gc

_collecting = gc.isenabled()
gc.disable()  # while this module imports, as in the recommend function (functions/recommend/app.py says why)

from typing import Annotated  # noqa: E402

from fastapi import Depends, Request
from mangum import Mangum

from recommender.serving import web
from recommender.serving.callers import client_address, current_user
from recommender.serving.logins import Logins
from recommender.serving.resources import get_logins, get_secret
from recommender.serving.schemas import LoginForm, TokenOut, UserOut
from recommender.serving.users import User

app = web.create_app(
    "Recommender auth", "OAuth2 password flow: POST /token, then send Authorization: Bearer <token>.", no_store=True
)


@app.post(
    "/token",
    response_model=TokenOut,
    summary="Get a bearer token (form fields username, password)",
    responses=web.errors(400, 401, 413, 422, 429, 503),
)
async def token(
    form: Annotated[LoginForm, Depends()],
    request: Request,
    logins: Annotated[Logins, Depends(get_logins)],
    secret: Annotated[str, Depends(get_secret)],
) -> TokenOut:
    """A JWT for a username and password (OAuth2 password flow); 401 for bad credentials, 429 after too many."""
    access_token = await logins.login(form.username, form.password, client_address(request), secret)
    return TokenOut(access_token=access_token)


@app.get(
    "/users/me", response_model=UserOut, summary="The user the token belongs to", responses=web.errors(401, 413, 503)
)
@app.get("/users/me/", response_model=UserOut, include_in_schema=False, responses=web.errors(401, 413, 503))
async def users_me(user: Annotated[User, Depends(current_user)]) -> UserOut:
    """The user the bearer token belongs to."""
    return UserOut(
        username=user.username, full_name=user.full_name, email=user.email, role=user.role, rights=user.rights()
    )


handler = Mangum(app, lifespan="off")
gc.freeze()
if _collecting:
    gc.enable()
