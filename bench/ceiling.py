"""The serving benchmark's references: bare apps that check the bearer token and answer a constant 10 items.

Two ceilings, each what its framework + uvicorn can do at most on this machine with the same token check (PyJWT,
same secret and algorithm, the token decoded on every request) and an answer of the same shape and size as the
product's, run with the product's uvicorn options (server.uvicorn_options):

- `fastapi`: a bare async FastAPI route;
- `starlette`: stricter, a bare Starlette route (no FastAPI) that also parses the JSON body.

`make bench-serve` starts each with `python -m bench.ceiling fastapi|starlette`, configured by the same environment
(STORAGE_URL, HOST, PORT, JWT_SECRET, ...) as the product server.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import jwt
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

KINDS = ("fastapi", "starlette")

# Ten items shaped like the product's /send_data rows: code, description of typical length, score.
ANSWER = {
    "result": {
        "recommendation": [
            [f"2{i:04d}", f"CONSTANT ANSWER ITEM {i:02d} OF THE BENCHMARK CEILING", round(0.9 - i / 20, 4)]
            for i in range(10)
        ]
    }
}


def create_app(secret: str, algorithm: str = "HS256") -> FastAPI:
    """The FastAPI ceiling: POST /send_data (bearer token checked, constant answer) and GET /health."""
    app = FastAPI(title="Benchmark ceiling")

    @app.post("/send_data")
    async def send_data(authorization: Annotated[str | None, Header()] = None) -> JSONResponse:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return JSONResponse({"detail": "not authenticated"}, status_code=401)
        try:
            jwt.decode(token, secret, algorithms=[algorithm])
        except jwt.PyJWTError:
            return JSONResponse({"detail": "invalid token"}, status_code=401)
        return JSONResponse(ANSWER)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def create_starlette_app(secret: str, algorithm: str = "HS256") -> Starlette:
    """The Starlette ceiling: POST /send_data parses the JSON body (a JSON object, else 422), checks the bearer
    token and answers the constant 10 items; GET /health. No FastAPI, no middleware."""
    from starlette.responses import JSONResponse as Answer

    async def send_data(request: Request) -> Answer:
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return Answer({"detail": "not authenticated"}, status_code=401)
        try:
            jwt.decode(token, secret, algorithms=[algorithm])
        except jwt.PyJWTError:
            return Answer({"detail": "invalid token"}, status_code=401)
        try:
            body: Any = await request.json()
        except ValueError:
            return Answer({"detail": "request body is not valid JSON"}, status_code=422)
        if not isinstance(body, dict):
            return Answer({"detail": "send a JSON object"}, status_code=422)
        return Answer(ANSWER)

    async def health(_request: Request) -> Answer:
        return Answer({"status": "ok"})

    return Starlette(routes=[Route("/send_data", send_data, methods=["POST"]), Route("/health", health)])


def main(kind: str = "fastapi") -> None:
    """Serve a ceiling app (fastapi or starlette) with the settings and signing secret the product server would use."""
    import uvicorn

    from recommender.core.settings import get_settings
    from recommender.core.storage import open_storage
    from recommender.local.server import uvicorn_options
    from recommender.serving.tokens import load_secret

    if kind not in KINDS:
        raise SystemExit(f"unknown ceiling {kind!r}: choose from {', '.join(KINDS)}")
    settings = get_settings()
    secret = load_secret(settings, open_storage(settings))
    factory = create_starlette_app if kind == "starlette" else create_app
    uvicorn.run(factory(secret, settings.jwt_algorithm), **uvicorn_options(settings))


if __name__ == "__main__":
    main(*sys.argv[1:2])
