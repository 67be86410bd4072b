"""JSON in and out: request bodies parsed by pydantic whatever their Content-Type, their OpenAPI documentation, and
the orjson response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from recommender.core.errors import InvalidInput

T = TypeVar("T")


def json_body(schema: type[BaseModel]) -> Callable[[Request], Awaitable[BaseModel]]:
    """A dependency parsing the request body as JSON into schema, whatever the Content-Type says.

    Clients of the original system sometimes post JSON without the header (curl -d does); pydantic's own
    JSON parser is also faster than FastAPI's default path.
    """

    async def parse(request: Request) -> BaseModel:
        return parse_json(schema, await request.body())

    return parse


def parse_json(schema: type[T], body: bytes) -> T:
    """body parsed as JSON into schema (a pydantic model); InvalidInput when empty, RequestValidationError (422)
    when it does not fit."""
    if not body.strip():
        raise InvalidInput("the request body is empty: send a JSON object")
    try:
        return schema.model_validate_json(body)  # type: ignore[attr-defined]
    except ValidationError as err:
        raise RequestValidationError(err.errors()) from None


def json_body_openapi(schema: type[BaseModel]) -> dict:
    """The openapi_extra that documents a json_body parameter (nested models inlined: a `#/$defs/...` reference would
    point nowhere in the OpenAPI document)."""
    document = schema.model_json_schema()
    definitions = document.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(document)}}}}


class FastJSON(JSONResponse):
    """A JSON response rendered by orjson (the answer of every recommendation, several microseconds sooner), or by
    pydantic for a response model (validated as it was built)."""

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            return content.__pydantic_serializer__.to_json(content)
        return orjson.dumps(content)
