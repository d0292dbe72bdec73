"""The event-sourced aggregate base class shared by Order, Inventory and Payment."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, NoReturn, Self

from domain.errors import CommandRefused, DomainError, IllegalTransition
from domain.events import DomainEvent


class Aggregate:
    """A pure state machine rebuilt from its events.

    Commands check the current state, then call ``_raise_event``; state changes only
    in ``_when`` (via ``apply``), so replaying the stored events rebuilds exactly the
    state the commands saw. A refused command raises before any event is raised and
    leaves the aggregate unchanged.

    ``version`` counts applied events (0 for a new aggregate); the event store uses
    it as the expected version when appending ``pending``. A command that raises
    events moves ``version`` forward immediately, so the expected version for an
    append is ``version - len(pending)``.
    """

    stream_type: ClassVar[str]
    snapshot_schema: ClassVar[int] = 1
    #: Payload fields naming sub-entities of the stream (a SKU's reservations) whose
    #: state the snapshot leaves out, so that it stays the same size however many
    #: there are. After a snapshot, a command on one of them needs its events loaded
    #: first (``load_entity``; ``Repository.load(..., entity=(field, key))``).
    entity_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, id: str) -> None:
        self.id = id
        self.version = 0
        self.pending: list[DomainEvent] = []
        # None: every event of the stream was applied, every sub-entity is known.
        # After a snapshot: the (field, key) sub-entities whose events were loaded.
        self._entities_loaded: set[tuple[str, str]] | None = None

    @property
    def stream_id(self) -> str:
        """The event-store stream this aggregate lives in."""
        raise NotImplementedError

    @property
    def state_name(self) -> str:
        """The state named in refusals (e.g. ``"draft"``)."""
        raise NotImplementedError

    def apply(self, event: DomainEvent) -> None:
        """Apply one stored or freshly raised event and count it in ``version``."""
        self._when(event)
        self.version += 1

    def _when(self, event: DomainEvent) -> None:
        """Mutate state for ``event``; subclasses dispatch on the event class."""
        raise NotImplementedError

    def _track(self, event: DomainEvent) -> None:
        """Update sub-entity state (not totals) for ``event``; ``_when`` calls it too."""

    def load_entity(self, field: str, key: str, events: Iterable[DomainEvent]) -> None:
        """Fold one sub-entity's events up to this aggregate's snapshot version.

        Only ``_track`` sees them: the totals already count them (they are in the
        snapshot); the events after the snapshot go through ``apply`` as usual.
        """
        if field not in self.entity_fields:
            raise ValueError(f"{type(self).__name__} has no sub-entities keyed by {field!r}")
        for event in events:
            self._track(event)
        if self._entities_loaded is not None:
            self._entities_loaded.add((field, key))

    @property
    def fully_loaded(self) -> bool:
        """True when every event was applied (no snapshot): all sub-entities are known."""
        return self._entities_loaded is None

    def _require_entity(self, field: str, key: str) -> None:
        # Why raise instead of answering from what is here: after a snapshot, a
        # sub-entity that was not loaded looks absent, and a command would decide
        # on that (reserve twice, release nothing). A programming error, never data.
        if self._entities_loaded is not None and (field, key) not in self._entities_loaded:
            raise RuntimeError(
                f"{type(self).__name__} {self.id} was loaded from a snapshot without "
                f"{field} {key!r}: load it with entity=({field!r}, {key!r})"
            )

    def _require_complete(self, what: str) -> None:
        if self._entities_loaded is not None:
            raise RuntimeError(
                f"{type(self).__name__} {self.id}: {what} needs every event; it was "
                "loaded from a snapshot (load it with use_snapshot=False)"
            )

    def _unknown_event(self, event: DomainEvent) -> NoReturn:
        raise DomainError(
            f"{type(self).__name__} {self.id} cannot apply event {event.event_type!r}"
        )

    def _raise_event(self, event: DomainEvent) -> None:
        """Apply ``event`` and queue it for saving."""
        self.apply(event)
        self.pending.append(event)

    def clear_pending(self) -> list[DomainEvent]:
        """Return the unsaved events and forget them (call after a successful append)."""
        pending, self.pending = self.pending, []
        return pending

    @property
    def expected_version(self) -> int:
        """The stream version the pending events must be appended after."""
        return self.version - len(self.pending)

    @classmethod
    def load(cls, id: str, events: Iterable[DomainEvent]) -> Self:
        """Rebuild an aggregate by replaying its events from the start of its stream."""
        aggregate = cls(id)
        for event in events:
            aggregate.apply(event)
        return aggregate

    def snapshot_state(self) -> dict[str, Any]:
        """JSON-safe, deterministic state (keys sorted) for snapshots and comparisons."""
        raise NotImplementedError

    def _restore(self, state: dict[str, Any]) -> None:
        """Inverse of ``snapshot_state``."""
        raise NotImplementedError

    @classmethod
    def from_snapshot(cls, id: str, version: int, state: dict[str, Any]) -> Self:
        """Rebuild from a snapshot taken at ``version``; apply later events after.

        The caller checks the stored snapshot schema against ``snapshot_schema`` and
        falls back to a full replay when they differ.
        """
        aggregate = cls(id)
        aggregate._restore(state)
        aggregate.version = version
        if cls.entity_fields:
            aggregate._entities_loaded = set()
        return aggregate

    def state_dict(self) -> dict[str, Any]:
        """``version`` plus ``snapshot_state()``: equal for equal aggregates (tests)."""
        return {"version": self.version, "state": self.snapshot_state()}

    def _illegal(self, command: str) -> NoReturn:
        raise IllegalTransition(type(self).__name__, self.id, self.state_name, command)

    def _refuse(self, command: str, reason: str) -> NoReturn:
        raise CommandRefused(type(self).__name__, self.id, self.state_name, command, reason)

    def _require_state(self, command: str, *allowed: str) -> None:
        if self.state_name not in allowed:
            self._illegal(command)

    def _require_text(self, command: str, field: str, value: str) -> None:
        if not value.strip():
            self._refuse(command, f"{field} must not be empty")

    def _require_positive(self, command: str, field: str, value: int) -> None:
        if value <= 0:
            self._refuse(command, f"{field} must be positive, got {value}")

    def _require_non_negative(self, command: str, field: str, value: int) -> None:
        if value < 0:
            self._refuse(command, f"{field} must not be negative, got {value}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} v{self.version} {self.state_name}>"
