"""Load and save aggregates: snapshot + the events after it; snapshots every N events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from domain.aggregate import Aggregate
from eventstore.base import EventStore, Snapshot
from eventstore.envelope import AppendResult, ConcurrencyError, NewEvent, deterministic_event_id

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")


class Repository(Generic[A]):
    """Aggregates of one type in one store.

    ``snapshot_every`` (per aggregate type, from settings) takes a snapshot when a
    save crosses a multiple of N events; 0 disables snapshots. A snapshot whose
    schema differs from the aggregate's ``snapshot_schema`` is ignored (full replay),
    never misread.
    """

    def __init__(self, store: EventStore, cls: type[A], *, snapshot_every: int = 0) -> None:
        self.store = store
        self.cls = cls
        self.snapshot_every = snapshot_every

    def stream_id(self, aggregate_id: str) -> str:
        """The stream of the aggregate with this id."""
        return self.cls(aggregate_id).stream_id

    async def load(
        self,
        aggregate_id: str,
        *,
        use_snapshot: bool = True,
        entity: tuple[str, str] | None = None,
    ) -> A:
        """The aggregate rebuilt from its latest usable snapshot and the events after it.

        ``entity=(field, key)``: the command is about that sub-entity (the aggregate's
        ``entity_fields``); after a snapshot its events up to the snapshot's version are
        read by key (an index probe, not the stream) and folded in before the tail.
        """
        stream_id = self.stream_id(aggregate_id)
        aggregate: A | None = None
        outdated = False
        if use_snapshot:
            snap = await self.store.load_snapshot(stream_id)
            if snap is not None and snap.schema == self.cls.snapshot_schema:
                aggregate = self.cls.from_snapshot(aggregate_id, snap.version, snap.state)
            outdated = snap is not None and aggregate is None
        if aggregate is None:
            aggregate = self.cls(aggregate_id)
        elif entity is not None and not aggregate.fully_loaded:
            field, key = entity
            history = await self.store.read_stream_keyed(
                stream_id, field, key, to_version=aggregate.version
            )
            aggregate.load_entity(field, key, (self.store.decode(r) for r in history))
        for recorded in await self.store.read_stream(stream_id, aggregate.version + 1):
            aggregate.apply(self.store.decode(recorded))
        if outdated and 0 < self.snapshot_every <= aggregate.version:
            # The stored snapshot has another schema (the aggregate's shape changed in
            # an upgrade): replace it now rather than replaying the whole stream on
            # every load until a save crosses the next multiple of snapshot_every.
            await self._snapshot(aggregate)
        return aggregate

    async def save(
        self,
        aggregate: A,
        *,
        metadata: Mapping[str, Any] | None = None,
        id_prefix: Sequence[object] | None = None,
    ) -> AppendResult | None:
        """Append the aggregate's pending events at its expected version.

        ``id_prefix`` makes the event ids deterministic (workflow id, step): a retried
        activity that saves the same events again writes nothing the second time.
        """
        pending = aggregate.pending
        if not pending:
            return None
        meta = dict(metadata or {})
        new_events = [
            NewEvent(event, event_id=deterministic_event_id(*id_prefix, index), metadata=meta)
            if id_prefix is not None
            else NewEvent(event, metadata=meta)
            for index, event in enumerate(pending)
        ]
        result = await self.store.append(
            aggregate.stream_id,
            new_events,
            aggregate.expected_version,
            stream_type=self.cls.stream_type,
        )
        aggregate.clear_pending()
        await self._maybe_snapshot(aggregate, len(new_events))
        return result

    async def _maybe_snapshot(self, aggregate: A, written: int) -> None:
        n = self.snapshot_every
        if n <= 0 or aggregate.version // n == (aggregate.version - written) // n:
            return
        await self._snapshot(aggregate)

    async def _snapshot(self, aggregate: A) -> None:
        await self.store.save_snapshot(
            Snapshot(
                stream_id=aggregate.stream_id,
                stream_type=self.cls.stream_type,
                version=aggregate.version,
                schema=self.cls.snapshot_schema,
                state=aggregate.snapshot_state(),
            )
        )


async def on_conflict_retry(
    attempt: Callable[[], Awaitable[T]], *, tries: int = 10, pause_s: float = 0.005
) -> T:
    """Run a load-decide-append ``attempt`` again when another writer won the stream.

    Why here and not in Temporal's retry policy: a version conflict is expected under
    load (many orders reserve the same SKU) and resolves at once on a fresh load; a
    retry policy's backoff would add hundreds of milliseconds per conflict.
    """
    for n in range(tries - 1):
        try:
            return await attempt()
        except ConcurrencyError:
            await asyncio.sleep(pause_s * (n + 1))
    return await attempt()
