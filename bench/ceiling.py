"""The serving benchmark's reference: a bare FastAPI app that checks the bearer token and answers a constant 10 items.

It is what FastAPI + uvicorn can do at most on this machine with the same token check (PyJWT, same secret
and algorithm) and an answer of the same shape and size as the product's, run with the product's uvicorn options
(server.uvicorn_options). `make bench-serve` starts it with `python -m bench.ceiling`, configured by the
same environment (STORAGE_URL, HOST, PORT, JWT_SECRET, ...) as the product server.
"""

from __future__ import annotations

from typing import Annotated

import jwt
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse

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
    """The ceiling app: POST /send_data (bearer token checked, constant answer) and GET /health."""
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


def main() -> None:
    """Serve the ceiling app with the settings and signing secret the product server would use."""
    import uvicorn

    from recommender.core.settings import get_settings
    from recommender.core.storage import open_storage
    from recommender.local.server import uvicorn_options
    from recommender.serving.tokens import load_secret

    settings = get_settings()
    app = create_app(load_secret(settings, open_storage(settings)), settings.jwt_algorithm)
    uvicorn.run(app, **uvicorn_options(settings))


if __name__ == "__main__":
    main()
