"""The event store: streams with optimistic concurrency, idempotent appends, a gap-free
global feed, snapshots and upcasting. PostgreSQL for real, in memory for unit tests."""

from eventstore.base import EventStore, FeedStatus, Snapshot
from eventstore.envelope import (
    ANY_VERSION,
    NO_STREAM,
    START,
    AppendResult,
    ConcurrencyError,
    DuplicateEventConflict,
    EventStoreError,
    FeedCursor,
    InvalidStreamId,
    NewEvent,
    RecordedEvent,
    UnreadableEvent,
    deterministic_event_id,
)
from eventstore.memory import InMemoryEventStore
from eventstore.repository import Repository, on_conflict_retry
from eventstore.upcasting import Upcasters

__all__ = [
    "ANY_VERSION",
    "NO_STREAM",
    "START",
    "AppendResult",
    "ConcurrencyError",
    "DuplicateEventConflict",
    "EventStore",
    "EventStoreError",
    "FeedCursor",
    "FeedStatus",
    "InMemoryEventStore",
    "InvalidStreamId",
    "NewEvent",
    "RecordedEvent",
    "Repository",
    "Snapshot",
    "UnreadableEvent",
    "Upcasters",
    "deterministic_event_id",
    "on_conflict_retry",
]
