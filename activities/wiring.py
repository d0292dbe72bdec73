"""What the worker hands each saga type's activity factory (``workflows.registry``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from activities._support import FaultInjector
from activities.notification import LoggingNotifier, Notifier
from eventstore import EventStore
from sagaflow.settings import Settings
from workflows.registry import SagaType


@dataclass
class ActivityDeps:
    """The worker's dependencies: settings, the event store and the external ports.

    ``provider`` is the payment provider (None: the simulator from settings);
    ``extra`` carries ports other saga types need, by name.
    """

    settings: Settings
    store: EventStore
    provider: Any = None
    notifier: Notifier = field(default_factory=LoggingNotifier)
    faults: FaultInjector = field(default_factory=FaultInjector)
    extra: dict[str, Any] = field(default_factory=dict)


def build_all(types: Iterable[SagaType], deps: ActivityDeps) -> list[Callable[..., Any]]:
    """The engine's journal plus every type's activities, each name once."""
    from activities.saga_journal import SagaJournalActivities

    found: dict[str, Callable[..., Any]] = {}
    journal = SagaJournalActivities(deps.store).record_saga_events
    for fn in [journal, *(a for t in types for a in t.activity_factory()(deps))]:
        name = getattr(getattr(fn, "__temporal_activity_definition", None), "name", None)
        # Why first wins: saga types may share activities (returns reuse inventory's).
        found.setdefault(str(name), fn)
    return list(found.values())
