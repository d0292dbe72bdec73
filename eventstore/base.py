"""The event-store contract every implementation honours (in-memory and PostgreSQL)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from domain.events import DomainEvent
from eventstore.envelope import (
    START,
    AppendResult,
    FeedCursor,
    NewEvent,
    RecordedEvent,
)
from eventstore.upcasting import Upcasters, default_upcasters


@dataclass(frozen=True)
class Snapshot:
    """An aggregate's state at ``version``, tagged with its snapshot schema."""

    stream_id: str
    stream_type: str
    version: int
    schema: int
    state: dict[str, Any]


@dataclass(frozen=True)
class FeedStatus:
    """How far the feed goes and whether an open transaction holds it back."""

    head_position: int
    #: seconds the oldest running write transaction has held the feed's horizon
    horizon_held_s: float


class EventStore(abc.ABC):
    """Streams of immutable, versioned events with a gap-free global feed."""

    def __init__(self, upcasters: Upcasters | None = None) -> None:
        self.upcasters = upcasters or default_upcasters()

    @abc.abstractmethod
    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        stream_type: str,
    ) -> AppendResult:
        """Append atomically after ``expected_version`` (or NO_STREAM / ANY_VERSION).

        Raises ConcurrencyError (nothing written) when the stream is elsewhere.
        When every event id is already stored, writes nothing and reports the
        earlier append as a duplicate: retried activities never duplicate facts.
        """

    @abc.abstractmethod
    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        """The stream's events from ``from_version`` on, in version order."""

    @abc.abstractmethod
    async def read_stream_keyed(
        self, stream_id: str, field: str, value: str, *, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The stream's events whose payload has ``field`` = ``value``, in version order.

        One sub-entity's history (a SKU's reservation ``r-1``) read without reading
        the stream: an aggregate whose snapshot leaves its sub-entities out loads the
        one a command is about (``Repository.load(..., entity=...)``). ``to_version``
        bounds it (inclusive), so it joins a snapshot taken at that version. The
        PostgreSQL store answers from an index per field (migration 0011) and refuses
        a field without one.
        """

    @abc.abstractmethod
    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 when it does not exist)."""

    @abc.abstractmethod
    async def stream_versions(self, stream_ids: Collection[str]) -> dict[str, int]:
        """The current version of each of ``stream_ids`` that exists, in one read.

        Streams that do not exist are absent from the result (not 0), so a caller
        asking which of many streams exist reads one round trip, not one per stream.
        """

    @abc.abstractmethod
    async def read_feed(self, after: FeedCursor = START, limit: int = 500) -> list[RecordedEvent]:
        """Committed events after ``after`` in feed order; never skips a late commit."""

    @abc.abstractmethod
    async def feed_status(self) -> FeedStatus:
        """The head position and how long the horizon has been held back."""

    @abc.abstractmethod
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store (or replace) the stream's snapshot."""

    @abc.abstractmethod
    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        """The stream's latest snapshot, if any."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def decode(self, recorded: RecordedEvent) -> DomainEvent:
        """The domain event for a stored one, upcast to its current schema."""
        return self.upcasters.decode(recorded)

    async def follow(
        self,
        after: FeedCursor = START,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 0.05,
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Tail the feed live from ``after``: yields non-empty batches in feed order.

        Short polling: a full batch is followed at once by the next read; an empty
        read waits ``poll_interval_s``. The caller checkpoints the last cursor.
        """
        cursor = after
        while stop is None or not stop.is_set():
            batch = await self.read_feed(cursor, batch_size)
            if batch:
                cursor = batch[-1].cursor
                yield batch
            if len(batch) < batch_size:
                if stop is None:
                    await asyncio.sleep(poll_interval_s)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), poll_interval_s)
