"""``Annotated`` dependency aliases shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import Scope, require
from api.container import Container


async def get_container(request: Request) -> Container:
    """The process's container (built in the lifespan)."""
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]
ReadScope = Annotated[frozenset[Scope], Depends(require(Scope.READ))]
WriteScope = Annotated[frozenset[Scope], Depends(require(Scope.WRITE))]
AdminScope = Annotated[frozenset[Scope], Depends(require(Scope.ADMIN))]
