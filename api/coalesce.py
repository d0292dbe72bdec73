"""Request coalescing for hot reads: concurrent lookups share one query per loop turn.

Under load many requests ask for rows at once, often the same row. Each would
take a pooled connection and a round trip of its own; a :class:`Coalescer`
gathers the keys asked for during one turn of the event loop and fetches them
with one query (``WHERE key = ANY(...)``), and requests for the same key share
the answer (single flight).

Why this never serves older data than a direct read would: a lookup joins only
the batch that has not been sent yet, so its query starts after the request
arrived. A request arriving while a batch is in flight waits for the next batch
instead of taking the in-flight answer, which may have been read before its
own write landed. Nothing is kept after a batch answers: this is not a cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Fetch = Callable[[Sequence[K]], Awaitable[dict[K, V]]]


class Coalescer(Generic[K, V]):
    """Batches concurrent ``get(key)`` calls into ``fetch(keys)`` calls.

    ``fetch`` returns the found keys' values; a key it leaves out reads as None.
    A failing fetch fails every lookup of its batch with the same exception.
    """

    def __init__(self, fetch: Fetch[K, V], *, max_batch: int = 256) -> None:
        self._fetch = fetch
        self._max_batch = max_batch
        self._pending: dict[K, asyncio.Future[V | None]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V | None:
        """The value of ``key`` read by a query that starts after this call."""
        future = self._pending.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            if not self._pending:
                # Why call_soon: lookups made by the other requests that are ready
                # in this loop turn join the batch before it is sent.
                loop.call_soon(self._send)
            future = self._pending[key] = loop.create_future()
            if len(self._pending) >= self._max_batch:
                self._send()
        # Why shield: a cancelled request (client gone) must not cancel the
        # shared future that other requests of the batch are waiting on.
        return await asyncio.shield(future)

    def _send(self) -> None:
        if not self._pending:
            return  # sent early because the batch was full
        batch, self._pending = self._pending, {}
        task = asyncio.get_running_loop().create_task(self._run(batch))
        # Why keep a reference: the loop holds tasks weakly.
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _run(self, batch: dict[K, asyncio.Future[V | None]]) -> None:
        try:
            found = await self._fetch(list(batch))
        except asyncio.CancelledError:
            for future in batch.values():
                future.cancel()
            raise
        except Exception as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for key, future in batch.items():
            if not future.done():
                future.set_result(found.get(key))
