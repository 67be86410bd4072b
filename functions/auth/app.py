"""Auth function: exchanges a username and password for a bearer token, and says whom a token belongs to."""

import gc

_collecting = gc.isenabled()
gc.disable()  # while this module imports, as in the recommend function (functions/recommend/app.py says why)

from typing import Annotated  # noqa: E402

from fastapi import Depends, Form, Request
from mangum import Mangum
from pydantic import BaseModel
from recommender.serving import web
from recommender.serving.logins import Logins
from recommender.serving.users import User

app = web.create_app("Recommender auth", "OAuth2 password flow: POST /token, then send Authorization: Bearer <token>.",
                     no_store=True)


class TokenOut(BaseModel):
    """A bearer token."""

    access_token: str
    token_type: str = "bearer"


class LoginForm:
    """The OAuth2 password form (RFC 6749, 4.3.2), as FastAPI's OAuth2PasswordRequestForm with the rules it enforces
    written into the schema: username and password must not be empty."""

    def __init__(self, username: Annotated[str, Form(min_length=1)],
                 password: Annotated[str, Form(min_length=1, json_schema_extra={"format": "password"})],
                 grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
                 scope: Annotated[str, Form()] = "", client_id: Annotated[str | None, Form()] = None,
                 client_secret: Annotated[str | None, Form(json_schema_extra={"format": "password"})] = None) -> None:
        self.username, self.password = username, password


class UserOut(BaseModel):
    """What a user may see about themselves."""

    username: str
    full_name: str
    email: str


@app.post("/token", response_model=TokenOut, summary="Get a bearer token (form fields username, password)",
          responses=web.errors(400, 401, 413, 422, 429, 503))
async def token(form: Annotated[LoginForm, Depends()], request: Request,
                logins: Annotated[Logins, Depends(web.get_logins)],
                secret: Annotated[str, Depends(web.get_secret)]) -> TokenOut:
    """A JWT for a username and password (OAuth2 password flow); 401 for bad credentials, 429 after too many."""
    access_token = await logins.login(form.username, form.password, web.client_address(request), secret)
    return TokenOut(access_token=access_token)


@app.get("/users/me", response_model=UserOut, summary="The user the token belongs to", responses=web.errors(401, 413, 503))
@app.get("/users/me/", response_model=UserOut, include_in_schema=False)
async def users_me(user: Annotated[User, Depends(web.current_user)]) -> UserOut:
    """The user the bearer token belongs to."""
    return UserOut(username=user.username, full_name=user.full_name, email=user.email)


handler = Mangum(app, lifespan="off")
gc.freeze()
if _collecting:
    gc.enable()
