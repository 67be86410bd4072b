"""The recommend function's routes for the console's workplace (rules, model versions, product feed), each part in
its module, and what its routes share; functions/recommend/app.py adds them to its app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from recommender.core.storage import Storage
from recommender.serving.callers import current_user
from recommender.serving.model import Model
from recommender.serving.resources import current_model, get_storage
from recommender.serving.users import User

ModelDep = Annotated[Model, Depends(current_model)]
UserDep = Annotated[User, Depends(current_user)]
StorageDep = Annotated[Storage, Depends(get_storage)]


class Routes:
    """Routes declared in a module (@routes.get(path, ...), as on an app) and added to an app later, exactly as if
    declared on it: app.include_router would put them behind one of FastAPI's sub-routers."""

    def __init__(self) -> None:
        self.declared: list[tuple[str, str, Callable, dict[str, Any]]] = []

    def get(self, path: str, **options: Any) -> Callable[[Callable], Callable]:
        """Declare a GET route, with FastAPI's options."""
        return self._declare("GET", path, options)

    def post(self, path: str, **options: Any) -> Callable[[Callable], Callable]:
        """Declare a POST route, with FastAPI's options."""
        return self._declare("POST", path, options)

    def _declare(self, method: str, path: str, options: dict[str, Any]) -> Callable[[Callable], Callable]:
        def register(endpoint: Callable) -> Callable:
            self.declared.append((method, path, endpoint, options))
            return endpoint

        return register

    def add_to(self, app: FastAPI) -> None:
        """Add every route, in the order declared."""
        for method, path, endpoint, options in self.declared:
            app.add_api_route(path, endpoint, methods=[method], **options)
