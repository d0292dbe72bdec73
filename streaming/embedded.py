"""The embedded transport: the projector follows the event store's own feed.

No broker and no relay. The position is the feed cursor (epoch, transaction id,
global position), written in the read-model transaction like a Kafka offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from eventstore.envelope import START, FeedCursor
from eventstore.postgres import PostgresEventStore
from sagaflow.settings import Settings
from streaming.transport import Batch, Deliver, Message, Position, Subscriber

#: the position source of feed messages
FEED_SOURCE = "$feed"


async def load_feed_checkpoint(pool: AsyncConnectionPool, consumer: str) -> FeedCursor:
    """The embedded projector's stored feed cursor."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT epoch, tx_id, position FROM projection_feed_checkpoints WHERE consumer = %s",
            (consumer,),
        )
        row = await cur.fetchone()
        return FeedCursor(*row) if row else START


def feed_checkpoint(consumer: str, cursors: dict[int, FeedCursor]):  # type: ignore[no-untyped-def]
    """A checkpoint writing the feed cursor of the batch's last event in the transaction."""

    async def write(conn: Any, messages: Sequence[Message], last_at: datetime | None) -> None:
        cursor = cursors[messages[-1].position.ordinal]
        await conn.execute(
            """
            INSERT INTO projection_feed_checkpoints (consumer, epoch, tx_id, position)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (consumer) DO UPDATE
            SET epoch = EXCLUDED.epoch, tx_id = EXCLUDED.tx_id, position = EXCLUDED.position,
                updated_at = now()
            """,
            (consumer, cursor.epoch, cursor.tx_id, cursor.position),
        )

    return write


class FeedSubscriber(Subscriber):
    """Delivers the store's feed from the stored cursor, in feed order."""

    def __init__(
        self, settings: Settings, pool: AsyncConnectionPool, store: PostgresEventStore
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.store = store
        self.consumer = settings.projector_group

    async def replays_from_start(self) -> bool:
        """True before the group's first checkpoint: the feed starts at the beginning."""
        return await load_feed_checkpoint(self.pool, self.consumer) == START

    async def run(self, deliver: Deliver, stop: asyncio.Event) -> None:
        """Follow the feed until ``stop``; every batch carries its cursor checkpoint."""
        s = self.settings
        start = await load_feed_checkpoint(self.pool, self.consumer)
        async for events in self.store.follow(
            start, batch_size=s.projector_batch_size, poll_interval_s=s.projector_poll_interval_s,
            stop=stop,
        ):  # fmt: skip
            cursors = {e.global_position: e.cursor for e in events}
            messages = [
                Message(Position(FEED_SOURCE, 0, e.global_position), e.stream_id, recorded=e)
                for e in events
            ]
            await deliver(Batch(messages, feed_checkpoint(self.consumer, cursors)))
