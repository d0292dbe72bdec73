"""An in-memory event store for pure unit tests; same contract as PostgreSQL's."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from eventstore.base import EventStore, FeedStatus, Snapshot
from eventstore.envelope import (
    ANY_VERSION,
    NO_STREAM,
    START,
    AppendResult,
    ConcurrencyError,
    DuplicateEventConflict,
    FeedCursor,
    NewEvent,
    RecordedEvent,
    check_same_fact,
    check_stream_id,
)
from eventstore.upcasting import Upcasters


class InMemoryEventStore(EventStore):
    """Everything in lists and dicts, guarded by one asyncio lock."""

    def __init__(self, upcasters: Upcasters | None = None) -> None:
        super().__init__(upcasters)
        self._events: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._by_id: dict[str, RecordedEvent] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = asyncio.Lock()

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        *,
        stream_type: str,
    ) -> AppendResult:
        check_stream_id(stream_id)
        if not events:
            raise ValueError("append needs at least one event")
        async with self._lock:
            known = [self._by_id[str(e.event_id)] for e in events if str(e.event_id) in self._by_id]
            if len(known) == len(events):
                for new, stored in zip(events, known, strict=True):
                    check_same_fact(new, stream_id, stored)
                return AppendResult(
                    stream_id,
                    known[0].version,
                    known[-1].version,
                    tuple(k.global_position for k in known),
                    duplicate=True,
                )
            if known:
                raise DuplicateEventConflict(
                    f"stream {stream_id!r}: {len(known)} of {len(events)} event ids already stored"
                )
            stream = self._streams.get(stream_id, [])
            actual = len(stream)
            if expected_version != ANY_VERSION and expected_version != actual:
                raise ConcurrencyError(stream_id, expected_version, actual)
            if expected_version == NO_STREAM and stream:
                raise ConcurrencyError(stream_id, expected_version, actual)
            now = datetime.now(UTC)
            written = []
            for offset, new in enumerate(events):
                position = len(self._events) + 1
                recorded = RecordedEvent(
                    event_id=new.event_id,
                    event_type=new.event_type,
                    schema_version=new.schema_version,
                    stream_id=stream_id,
                    stream_type=stream_type,
                    version=actual + offset + 1,
                    global_position=position,
                    recorded_at=now,
                    data=new.data(),
                    metadata=dict(new.metadata),
                    cursor=FeedCursor(0, position, position),
                )
                self._events.append(recorded)
                self._by_id[str(new.event_id)] = recorded
                written.append(recorded)
            self._streams[stream_id] = [*stream, *written]
            return AppendResult(
                stream_id,
                written[0].version,
                written[-1].version,
                tuple(w.global_position for w in written),
            )

    def insert_raw(self, recorded: RecordedEvent) -> None:
        """Test hook: store a hand-made record (old schema versions, corrupt payloads)."""
        position = len(self._events) + 1
        stream = self._streams.setdefault(recorded.stream_id, [])
        fixed = RecordedEvent(
            **{
                **recorded.__dict__,
                "version": len(stream) + 1,
                "global_position": position,
                "cursor": FeedCursor(0, position, position),
            }
        )
        self._events.append(fixed)
        stream.append(fixed)

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        check_stream_id(stream_id)
        return [e for e in self._streams.get(stream_id, []) if e.version >= from_version]

    async def read_stream_keyed(
        self, stream_id: str, field: str, value: str, *, to_version: int | None = None
    ) -> list[RecordedEvent]:
        check_stream_id(stream_id)
        last = to_version if to_version is not None else float("inf")
        return [
            e
            for e in self._streams.get(stream_id, [])
            if e.version <= last and e.data.get(field) == value
        ]

    async def stream_version(self, stream_id: str) -> int:
        check_stream_id(stream_id)
        return len(self._streams.get(stream_id, []))

    async def stream_versions(self, stream_ids: Collection[str]) -> dict[str, int]:
        for stream_id in stream_ids:
            check_stream_id(stream_id)
        return {s: len(self._streams[s]) for s in set(stream_ids) if s in self._streams}

    async def read_feed(self, after: FeedCursor = START, limit: int = 500) -> list[RecordedEvent]:
        return [e for e in self._events if e.cursor > after][:limit]

    async def feed_status(self) -> FeedStatus:
        return FeedStatus(head_position=len(self._events), horizon_held_s=0.0)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        current = self._snapshots.get(snapshot.stream_id)
        newer = current is None or current.version < snapshot.version
        if newer or (current is not None and current.schema != snapshot.schema):
            self._snapshots[snapshot.stream_id] = snapshot

    async def load_snapshot(self, stream_id: str) -> Snapshot | None:
        return self._snapshots.get(stream_id)
