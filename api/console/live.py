"""Live updates for the console: one tail of the event store's feed per API process,
fanned out to every open page as server-sent events.

Why one tail, not one per viewer: a viewer costs a queue here, nothing in
PostgreSQL or Temporal. Why wait for the projections before telling the pages: a
page re-renders from the read models when told, so telling it before the read
models applied the event would show the old state (bounded: after
``PROJECTION_WAIT_S`` the pages are told anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from eventstore import START, FeedCursor, RecordedEvent
from eventstore.postgres import PostgresEventStore
from projections.handlers import default_projections

log = logging.getLogger("sagaflow.console")

PROJECTION_WAIT_S = 2.0
QUEUE_SIZE = 64
LAG_SAMPLE_EVERY_S = 5.0
LAG_SAMPLES = 120

_APPLIED = """
SELECT stream_id, max(version) FROM projection_watermarks
WHERE stream_id = ANY(%s) GROUP BY stream_id
"""

_HEAD = """
SELECT epoch, tx_id::text, global_position FROM events
WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY epoch DESC, tx_id DESC, global_position DESC LIMIT 1
"""


class LiveHub:
    """Tails the feed from its head and broadcasts each batch to the subscribers."""

    def __init__(self, store: PostgresEventStore, lag_probe: Any = None) -> None:
        self.store = store
        self.projected = frozenset().union(*(p.stream_types for p in default_projections()))
        """Stream types some read model projects (the ones worth waiting for)."""
        self.lag_probe = lag_probe
        """An async callable returning the current lags (sampled for the charts)."""
        self.lag_history: deque[tuple[float, dict[str, float]]] = deque(maxlen=LAG_SAMPLES)
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """Start the tail at the feed's head (idempotent).

        Why the head is read before returning: a viewer subscribed after this sees
        every event committed after its subscription; one committed between the
        page's render and the subscription is covered by the page's refresh on
        connect.
        """
        if self._task is None:
            async with self._start_lock:
                if self._task is None:
                    head = await self._head()
                    self._task = asyncio.create_task(self._run(head), name="console-live")

    async def stop(self) -> None:
        """Stop the tail and end every subscriber's stream."""
        self._stop.set()
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait("")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def subscribe(self) -> AsyncIterator[str]:
        """SSE frames for one viewer until it leaves or the hub stops."""
        await self.start()
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            yield "retry: 1000\n\n"
            while not self._stop.is_set():
                try:
                    frame = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    frame = ": keep-alive\n\n"  # proxies close silent connections
                if not frame:
                    return
                yield frame
        finally:
            self._subscribers.discard(queue)

    def _broadcast(self, frame: str) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                # Why drop rather than wait: one slow viewer must not hold the others;
                # it re-renders on the next batch anyway (each frame means "changed").
                log.debug("console viewer too slow; frame dropped")

    async def _head(self) -> FeedCursor:
        async with self.store.pool.connection() as conn:
            cur = await conn.execute(_HEAD)
            row = await cur.fetchone()
        return START if row is None else FeedCursor(int(row[0]), int(row[1]), int(row[2]))

    async def _run(self, head: FeedCursor) -> None:
        cursor = head
        while not self._stop.is_set():
            try:
                cursor = await self._tail(cursor)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: try again, the pages stay up
                log.warning("console live feed failed: %s; retrying", exc)
                await asyncio.sleep(1.0)

    async def _tail(self, cursor: FeedCursor) -> FeedCursor:
        next_sample = 0.0
        while not self._stop.is_set():
            batch = await self.store.read_feed(cursor, 500)
            if batch:
                cursor = batch[-1].cursor
                await self._await_projection(batch)
                self._broadcast(frame(batch))
            if time.monotonic() >= next_sample and self.lag_probe is not None:
                next_sample = time.monotonic() + LAG_SAMPLE_EVERY_S
                with contextlib.suppress(Exception):
                    self.lag_history.append((time.time(), await self.lag_probe()))
            if len(batch) < 500:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.05)
        return cursor

    async def _await_projection(self, batch: list[RecordedEvent]) -> None:
        # Why only streams a read model projects: the others (notifications, say) get
        # no watermark, and waiting for one would always run into the bound.
        wanted: dict[str, int] = {}
        for e in batch:
            if e.stream_type in self.projected:
                wanted[e.stream_id] = max(wanted.get(e.stream_id, 0), e.version)
        deadline = time.monotonic() + PROJECTION_WAIT_S
        delay = 0.005
        while wanted and time.monotonic() < deadline:
            async with self.store.pool.connection() as conn:
                cur = await conn.execute(_APPLIED, (list(wanted),))
                applied: dict[str, int] = dict(await cur.fetchall())
            wanted = {s: v for s, v in wanted.items() if applied.get(s, 0) < v}
            if wanted:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)


def frame(batch: list[RecordedEvent]) -> str:
    """One SSE ``change`` frame listing the batch's events (stream, type, position, time)."""
    events = [
        {
            "stream_id": e.stream_id,
            "stream_type": e.stream_type,
            "event_type": e.event_type,
            "version": e.version,
            "global_position": e.global_position,
            "recorded_at": e.recorded_at.isoformat(),
        }
        for e in batch[-50:]
    ]
    return f"event: change\ndata: {json.dumps({'events': events, 'count': len(batch)})}\n\n"
