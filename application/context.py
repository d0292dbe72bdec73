"""The dependencies of the use cases, built once per process (never at import time)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client

from application.errors import Unavailable
from eventstore import EventStore
from sagaflow.settings import Settings
from workflows.registry import SagaRegistry, default_registry


@dataclass
class Context:
    """Settings, the event store, the saga registry and (when connected) the Temporal
    client of a process.

    ``temporal`` may be None: the read side still works, and a use case that needs
    the workflow service raises :class:`Unavailable`.
    """

    settings: Settings
    store: EventStore
    temporal: Client | None = None
    registry: SagaRegistry = field(default_factory=default_registry)
    """The saga types this process knows (the API's generic routes, the CLI)."""

    @property
    def pool(self) -> Any:
        """The PostgreSQL pool of the store (read models, idempotency keys)."""
        pool = getattr(self.store, "pool", None)
        if pool is None:
            raise TypeError(f"{type(self.store).__name__} has no PostgreSQL pool")
        return pool

    def require_temporal(self) -> Client:
        """The Temporal client, or :class:`Unavailable` when there is none."""
        if self.temporal is None:
            raise Unavailable("Temporal", "this process has no Temporal connection")
        return self.temporal
