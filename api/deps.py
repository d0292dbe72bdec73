"""``Annotated`` dependency aliases shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security

from api.auth import Caller, KeyAuth, Scope
from api.container import Container


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
