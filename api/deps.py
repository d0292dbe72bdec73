"""``Annotated`` dependency aliases shared by the routes."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.auth import Caller, KeyAuth, Scope
from api.container import Container
from api.errors import ApiError, FieldProblem


async def get_container(request: Request) -> Container:
    """The process's container (built in the lifespan), for the unauthenticated routes."""
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]
#: The read check itself, for a route that calls it instead of declaring it.
READ_AUTH = KeyAuth(Scope.READ)
Reader = Annotated[Caller, Security(READ_AUTH)]
Writer = Annotated[Caller, Security(KeyAuth(Scope.WRITE))]
Admin = Annotated[Caller, Security(KeyAuth(Scope.ADMIN))]


async def single_valued_query(request: Request) -> None:
    """Refuse (422) a declared query parameter given more than once.

    Why: no query parameter of the API takes a list, and FastAPI would silently keep
    the last value, answering a request the schema does not allow
    (``?limit=1&limit=2``). Installed as an app-wide dependency.
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    declared = _QUERY_NAMES.get(id(route))
    if declared is None:
        declared = _QUERY_NAMES[id(route)] = frozenset(_query_names(route.dependant))
    counts = Counter(key for key, _ in request.query_params.multi_items() if key in declared)
    repeated = sorted((key, n) for key, n in counts.items() if n > 1)
    if repeated:
        raise ApiError(
            422,
            "invalid request",
            "a query parameter was given more than once",
            errors=[
                FieldProblem(field=key, message=f"given {n} times; it takes one value")
                for key, n in repeated
            ],
        )


_QUERY_NAMES: dict[int, frozenset[str]] = {}
"""Each route's declared query parameter names, by the route's id (a route is not
hashable; routes live as long as the app)."""


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
