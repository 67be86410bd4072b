"""Auth function: exchanges a username and password for a bearer token, and says whom a token belongs to."""

from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordRequestForm
from mangum import Mangum
from pydantic import BaseModel
from recommender.core.storage import Storage
from recommender.serving import web
from recommender.serving.tokens import login
from recommender.serving.users import User
from starlette.concurrency import run_in_threadpool

app = web.create_app("Recommender auth", "OAuth2 password flow: POST /token, then send Authorization: Bearer <token>.")


class TokenOut(BaseModel):
    """A bearer token."""

    access_token: str
    token_type: str = "bearer"


class UserOut(BaseModel):
    """What a user may see about themselves."""

    username: str
    full_name: str
    email: str


@app.post("/token", response_model=TokenOut, summary="Get a bearer token (form fields username, password)")
async def token(form: Annotated[OAuth2PasswordRequestForm, Depends()], settings: web.SettingsDep,
                storage: Annotated[Storage, Depends(web.get_storage)],
                secret: Annotated[str, Depends(web.get_secret)]) -> TokenOut:
    """A JWT for a username and password (OAuth2 password flow); 401 for bad credentials."""
    # bcrypt takes a quarter of a second on purpose: off the event loop.
    access_token = await run_in_threadpool(login, storage, settings, secret, form.username, form.password)
    return TokenOut(access_token=access_token)


@app.get("/users/me", response_model=UserOut, summary="The user the token belongs to")
@app.get("/users/me/", response_model=UserOut, include_in_schema=False)
async def users_me(user: Annotated[User, Depends(web.current_user)]) -> UserOut:
    """The user the bearer token belongs to."""
    return UserOut(username=user.username, full_name=user.full_name, email=user.email)


handler = Mangum(app, lifespan="off")
