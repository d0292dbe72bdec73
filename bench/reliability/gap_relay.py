"""A relay that leaves events out on purpose (fault injection, not runtime code).

``python -m bench.reliability.gap_relay``: the usual ``sagaflow relay`` (same settings,
same lease and checkpoint), except that its publisher drops the first event (version
1) of one Order stream in ``SAGAFLOW_GAP_DROP_EVERY``, chosen by a hash of the stream
id: the broker never carries it, so the projector receives version 2 first and must
heal the gap from the event store. Each dropped event id is appended, one per line,
to ``SAGAFLOW_GAP_DROPPED_FILE``.

Why version 1 of Order streams: ``create_order`` appends versions 1 to 4 together,
so a later version of the same stream always follows (a gap is only seen, and
healed, when one does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from collections.abc import Awaitable, Sequence
from pathlib import Path

from eventstore.envelope import EncodedEvent
from eventstore.postgres import PostgresEventStore
from sagaflow.settings import Settings, load_settings
from streaming.kafka import quiet_kafka_logs, run_until_stopped
from streaming.lease import RelayLease
from streaming.relay import Relay
from streaming.transport import Publisher, make_publisher

log = logging.getLogger("sagaflow.relay")


def dropped(event: EncodedEvent, every: int) -> bool:
    """Whether the gap relay leaves ``event`` out."""
    return (
        event.stream_type == "Order"
        and event.version == 1
        and zlib.crc32(event.stream_id.encode()) % every == 0
    )


class DroppingPublisher(Publisher):
    """Wraps the transport's publisher; sends every event but the ``dropped`` ones."""

    def __init__(self, inner: Publisher, every: int, record: Path) -> None:
        self.inner = inner
        self.every = every
        self.record = record

    async def start(self) -> None:
        """Connect the wrapped publisher."""
        await self.inner.start()

    async def close(self) -> None:
        """Disconnect the wrapped publisher."""
        await self.inner.close()

    def _keep(self, batch: Sequence[EncodedEvent]) -> list[EncodedEvent]:
        gone = [e for e in batch if dropped(e, self.every)]
        if gone:
            with self.record.open("a") as f:
                f.writelines(f"{e.event_id}\n" for e in gone)
            log.warning("gap relay: left out %d event(s) on purpose", len(gone))
        return [e for e in batch if not dropped(e, self.every)]

    async def publish(self, batch: Sequence[EncodedEvent]) -> None:
        """Publish the batch without the dropped events."""
        await self.inner.publish(self._keep(batch))

    async def send(self, batch: Sequence[EncodedEvent]) -> Awaitable[None]:
        """Send the batch without the dropped events (pipelined like the inner one)."""
        return await self.inner.send(self._keep(batch))


async def main(settings: Settings) -> None:
    """Run the relay with the dropping publisher until SIGTERM."""
    every = int(os.environ.get("SAGAFLOW_GAP_DROP_EVERY", "20"))
    record = Path(os.environ["SAGAFLOW_GAP_DROPPED_FILE"])
    assert settings.database_url
    quiet_kafka_logs()
    store = await PostgresEventStore.connect(settings.database_url, max_size=4)
    lease = RelayLease(settings, settings.database_url)
    try:
        await lease.check_owner()
        stop = asyncio.Event()
        relay = Relay(
            store,
            settings,
            publisher=lambda: DroppingPublisher(
                make_publisher(settings, store.pool), every, record
            ),
            lease=lease,
        )
        await run_until_stopped(relay.run(stop), stop)
    finally:
        await lease.release()
        await store.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(load_settings()))
