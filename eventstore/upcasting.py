"""Upcasters: stored events of old schema versions keep loading after a type changes.

An upcaster turns the payload of ``(event_type, version n)`` into version ``n + 1``.
On read, a chain runs from the stored version to the event class's current one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from domain.errors import UnknownEventType
from domain.events import DomainEvent, event_class
from eventstore.envelope import RecordedEvent, UnreadableEvent

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class Upcasters:
    """A registry of one-step upcasters, applied as a chain when decoding."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``fn`` turns ``event_type`` v``from_version`` into v``from_version+1``."""

        def decorator(fn: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._steps:
                raise ValueError(f"an upcaster for {event_type} v{from_version} already exists")
            self._steps[key] = fn
            return fn

        return decorator

    def upcast(self, event_type: str, version: int, target: int, data: Payload) -> Payload:
        """Run the chain ``version`` → ``target``; KeyError names a missing step."""
        while version < target:
            step = self._steps.get((event_type, version))
            if step is None:
                raise KeyError(f"no upcaster from {event_type} v{version} to v{version + 1}")
            data = step(dict(data))
            version += 1
        return data

    def decode(self, recorded: RecordedEvent) -> DomainEvent:
        """The domain event for a stored one, upcast to the current schema version."""
        try:
            cls = event_class(recorded.event_type)
        except UnknownEventType:
            raise self._unreadable(
                recorded, f"unknown event type {recorded.event_type!r}"
            ) from None
        if recorded.schema_version > cls.schema_version:
            raise self._unreadable(
                recorded,
                f"{recorded.event_type} v{recorded.schema_version} is newer than this code "
                f"(v{cls.schema_version})",
            )
        try:
            data = self.upcast(
                recorded.event_type, recorded.schema_version, cls.schema_version, recorded.data
            )
        except KeyError as exc:
            raise self._unreadable(recorded, str(exc.args[0])) from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            raise self._unreadable(
                recorded, f"corrupt {recorded.event_type} payload: {where}: {first['msg']}"
            ) from None

    @staticmethod
    def _unreadable(recorded: RecordedEvent, reason: str) -> UnreadableEvent:
        return UnreadableEvent(
            recorded.stream_id, recorded.version, recorded.global_position, reason
        )


def default_upcasters() -> Upcasters:
    """The upcasters of sagaflow's own event history (none needed yet)."""
    return Upcasters()
