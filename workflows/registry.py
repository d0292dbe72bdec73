"""The registry of saga types: one line per type, read by the worker, the replayer,
the API, the CLI and the test kit.

Each entry names the definition, its workflow class and where its activity
implementations are built. Why the activities by import path: ``workflows/`` must
not import ``activities/`` (I/O, psycopg); only the worker resolves the path, and
``SagaType.load_activities`` fails with a message naming the type if it is wrong.
Compensations stay typed references in the definitions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from workflows.definition import SagaDefinition, SagaDefinitionError


@dataclass(frozen=True)
class SagaType:
    """A registered saga type."""

    definition: SagaDefinition
    workflow: type
    activities: str
    """``module:function`` building the type's activity implementations from the
    worker's dependencies (``activities.wiring.ActivityDeps``)."""

    @property
    def name(self) -> str:
        """The workflow type name (stable: renaming breaks running sagas)."""
        return self.definition.name

    def activity_factory(self) -> Callable[[Any], list[Callable[..., Any]]]:
        """The function that builds this type's activities (imported on demand)."""
        module_name, _, attr = self.activities.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise SagaDefinitionError(
                f"saga {self.name!r}: activities {self.activities!r} not found ({exc})"
            ) from None
        return factory


class SagaRegistry:
    """The registered saga types, by name, in registration order."""

    def __init__(self, types: Sequence[SagaType] = ()) -> None:
        self._types: dict[str, SagaType] = {}
        for saga_type in types:
            self.add(saga_type)

    def add(self, saga_type: SagaType) -> SagaType:
        """Register a type (names are unique)."""
        if saga_type.name in self._types:
            raise SagaDefinitionError(f"saga {saga_type.name!r} is registered twice")
        self._types[saga_type.name] = saga_type
        return saga_type

    def __iter__(self) -> Iterator[SagaType]:
        return iter(self._types.values())

    def __len__(self) -> int:
        return len(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    @property
    def names(self) -> list[str]:
        """Registered type names."""
        return list(self._types)

    def get(self, name: str) -> SagaType:
        """The type called ``name``; UnknownSagaType names the known ones."""
        try:
            return self._types[name]
        except KeyError:
            raise UnknownSagaType(name, self.names) from None

    def by_workflow(self, workflow_type: str) -> SagaType | None:
        """The type of a workflow type name, if registered."""
        return self._types.get(workflow_type)

    @property
    def workflows(self) -> list[type]:
        """Every workflow class (for workers and replayers)."""
        return [t.workflow for t in self]

    @property
    def definitions(self) -> list[SagaDefinition]:
        """Every definition."""
        return [t.definition for t in self]

    def validate(self) -> None:
        """Check every definition (the worker calls this before it polls)."""
        for saga_type in self:
            saga_type.definition.validate()
            defn = getattr(saga_type.workflow, "__temporal_workflow_definition", None)
            if defn is None or defn.name != saga_type.name:
                raise SagaDefinitionError(
                    f"saga {saga_type.name!r}: {saga_type.workflow.__name__} is not "
                    f"a workflow named {saga_type.name!r}"
                )


class UnknownSagaType(LookupError):
    """No saga type of this name is registered."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name, self.known = name, list(known)
        super().__init__(f"unknown saga type {name!r}; known types: {', '.join(known)}")


def default_registry() -> SagaRegistry:
    """The saga types sagaflow ships: one line each."""
    from workflows.order_saga import ORDER, OrderSagaWorkflow
    from workflows.returns_saga import RETURNS, ReturnSagaWorkflow
    from workflows.trip_saga import TRIP, TripSagaWorkflow

    return SagaRegistry(
        [
            SagaType(ORDER, OrderSagaWorkflow, "activities.order_saga:build_activities"),
            SagaType(RETURNS, ReturnSagaWorkflow, "activities.returns:build_activities"),
            SagaType(TRIP, TripSagaWorkflow, "activities.trip:build_activities"),
        ]
    )
