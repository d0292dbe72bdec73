"""The RabbitMQ transport: a topic exchange, sharded quorum queues, TTL retries, a DLX.

Topology (declared by the relay and by every projector, idempotently):

* ``sagaflow.events`` (SAGAFLOW_RABBITMQ_EXCHANGE): a durable **topic** exchange.
  Each event is one persistent message, routing key ``<StreamType>.<EventType>``,
  ``message_id`` = event id, body = the JSON envelope, headers = its scalar fields.
  Integration subscribers bind their own queues here (``sagaflow subscribe``).
* ``<exchange>.shards.<group>``: a consistent-hash exchange bound to the topic
  exchange with ``#``, hashing the ``stream_id`` header into N = SAGAFLOW_RABBITMQ_SHARDS
  **quorum queues** ``<exchange>.<group>.<i>``, each with a single active consumer.
  Why: one stream always lands in one queue, and one consumer at a time reads that
  queue, so a stream's events are applied in order while N queues share the load.
* ``<queue>.retry.<ms>``: classic queues whose message TTL dead-letters back into the
  shard queue; the projector sends a failing message there (the attempt is counted
  from its ``x-death`` header) and holds its stream until it applies.
* ``<exchange>.dlx``: the dead-letter exchange; queue ``<exchange>.dlx.<group>`` keeps
  dead letters (with ``dlt.*`` headers) beside the dead-letter table.

Projectors share the shard queues through PostgreSQL advisory locks: each holds a
member slot, and member k of M consumes the queues i with i % M == k. A projector
that dies releases its slot, and the others take its queues over. Acknowledgements
go out only after the batch's transaction committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import aio_pika
import psycopg
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.abc import AbstractChannel as UnderlayChannel
from aiormq.abc import DeliveredMessage
from psycopg_pool import AsyncConnectionPool

from eventstore.envelope import EncodedEvent, RecordedEvent
from sagaflow.clients import connect_rabbitmq, rabbitmq_url
from sagaflow.settings import Settings
from streaming.kafka import header_values
from streaming.transport import Backlog, Batch, Deliver, Message, Position, Publisher, Subscriber

log = logging.getLogger("sagaflow.rabbitmq")

#: member slots a projector group can have (advisory lock keys)
MAX_MEMBERS = 64


def routing_key(stream_type: str, event_type: str) -> str:
    """The topic routing key of an event."""
    return f"{stream_type}.{event_type}"


def shard_queue(settings: Settings, group: str, shard: int) -> str:
    """The name of a projector group's shard queue."""
    return f"{settings.rabbitmq_exchange}.{group}.{shard}"


def encode_message(event: EncodedEvent | RecordedEvent) -> aio_pika.Message:
    """One event as a persistent AMQP message with the envelope's fields as headers."""
    if isinstance(event, RecordedEvent):
        event = EncodedEvent.of(event)
    headers: dict[str, Any] = dict(header_values(event))
    return aio_pika.Message(
        event.body,
        message_id=event.event_id,
        type=event.event_type,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
    )


async def declare_events_exchange(channel: AbstractChannel, settings: Settings) -> AbstractExchange:
    """The durable topic exchange every event is published to."""
    return await channel.declare_exchange(
        settings.rabbitmq_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )


async def declare_group(
    channel: AbstractChannel, settings: Settings, group: str
) -> list[AbstractQueue]:
    """The projector group's shard exchange, quorum queues and dead-letter queue."""
    events = await declare_events_exchange(channel, settings)
    dlx = await channel.declare_exchange(
        f"{settings.rabbitmq_exchange}.dlx", aio_pika.ExchangeType.DIRECT, durable=True
    )
    dead = await channel.declare_queue(
        f"{settings.rabbitmq_exchange}.dlx.{group}",
        durable=True,
        arguments={"x-queue-type": "quorum"},
    )
    await dead.bind(dlx, routing_key=group)
    shards = await channel.declare_exchange(
        f"{settings.rabbitmq_exchange}.shards.{group}",
        "x-consistent-hash",
        durable=True,
        arguments={"hash-header": "stream_id"},
    )
    await shards.bind(events, routing_key="#")
    queues = []
    for shard in range(settings.rabbitmq_shards):
        queue = await channel.declare_queue(
            shard_queue(settings, group, shard),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-single-active-consumer": True,
                "x-dead-letter-exchange": dlx.name,
                "x-dead-letter-routing-key": group,
            },
        )
        # the binding key of a consistent-hash exchange is the queue's weight
        await queue.bind(shards, routing_key="1")
        queues.append(queue)
    return queues


#: the projection_offsets row recording from which relay position a group's queues fill
ORIGIN = "rabbitmq:origin"


async def record_origin(settings: Settings, pool: AsyncConnectionPool) -> None:
    """Record, once, the relay's checkpoint when the group's queues were first declared.

    Why: the queues hold only what was published after they existed. Origin 0 means
    they were declared before the relay's first checkpoint, so they hold every event
    (the relay declares them before it publishes anything); otherwise a new read
    model must bootstrap from the event store.
    """
    async with pool.connection() as conn:
        await conn.execute(
            """
            INSERT INTO projection_offsets (consumer, topic, partition, next_offset)
            SELECT %s, %s, 0, coalesce(
                (SELECT position FROM relay_checkpoints WHERE relay_name = %s), 0)
            ON CONFLICT DO NOTHING
            """,
            (settings.projector_group, ORIGIN, settings.relay_name),
        )


class RabbitPublisher(Publisher):
    """The relay's side: publisher confirms on the topic exchange, in windows."""

    def __init__(self, settings: Settings, pool: AsyncConnectionPool | None = None) -> None:
        rabbitmq_url(settings)  # one clear line when the broker is not configured
        self.settings = settings
        self.pool = pool
        self.connection: AbstractRobustConnection | None = None
        self.exchange: AbstractExchange | None = None

    async def start(self) -> None:
        """Connect, open a confirming channel, declare the topology of the projector group."""
        self.connection = await connect_rabbitmq(self.settings)
        channel = await self.connection.channel(publisher_confirms=True)
        # Why declare the projector's queues here too: messages published before the
        # first projector ever started would otherwise be routed nowhere and lost.
        await declare_group(channel, self.settings, self.settings.projector_group)
        if self.pool is not None:
            await record_origin(self.settings, self.pool)
        self.exchange = await declare_events_exchange(channel, self.settings)

    async def close(self) -> None:
        """Disconnect."""
        if self.connection is not None:
            connection, self.connection = self.connection, None
            with contextlib.suppress(Exception):
                await connection.close()

    async def publish(self, batch: Sequence[EncodedEvent]) -> None:
        """Publish in order; return when the broker confirmed every message.

        Why windows: waiting for each confirm would cost a round trip per event;
        confirms for a window arrive together and the order on the channel is kept.
        """
        assert self.exchange is not None
        window = self.settings.rabbitmq_confirm_window
        for start in range(0, len(batch), window):
            pending = [
                self.exchange.publish(
                    encode_message(r), routing_key=routing_key(r.stream_type, r.event_type)
                )
                for r in batch[start : start + window]
            ]
            await asyncio.gather(*pending)


def attempt_of(headers: Mapping[str, Any] | None, queue: str) -> int:
    """1 + how many times a message expired from one of ``queue``'s retry queues
    (counted from its ``x-death`` header)."""
    deaths: Any = (headers or {}).get("x-death") or []
    expired = 0
    for death in deaths if isinstance(deaths, list) else []:
        if not isinstance(death, dict):
            continue
        name = str(death.get("queue", ""))
        if name.startswith(queue + ".retry.") and death.get("reason") == "expired":
            expired += int(str(death.get("count", 1)))
    return 1 + expired


def to_message(delivered: DeliveredMessage, queue: str, shard: int) -> Message:
    """An AMQP delivery as the projector's Message (position: queue, shard, global position)."""
    headers = delivered.header.properties.headers or {}
    body = delivered.body
    try:
        ordinal = int(str(headers["global_position"]))
    except (KeyError, ValueError):
        # not a sagaflow envelope: key its dead letter by the body, so a redelivery
        # records the same row once
        ordinal = zlib.crc32(body)
    stream = headers.get("stream_id")
    return Message(
        position=Position(queue, shard, ordinal),
        stream_id=str(stream) if stream is not None else None,
        payload=body,
        attempt=attempt_of(headers, queue),
        amqp_headers=headers,
    )


def rabbit_checkpoint(consumer: str):  # type: ignore[no-untyped-def]
    """Records when the last applied event was recorded (lag); the broker owns positions."""

    async def write(conn: Any, messages: Sequence[Message], last_at: datetime | None) -> None:
        if last_at is None:
            return
        await conn.execute(
            """
            INSERT INTO projection_offsets (consumer, topic, partition, next_offset,
                                            last_event_at)
            VALUES (%s, %s, 0, 0, %s)
            ON CONFLICT (consumer, topic, partition) DO UPDATE
            SET last_event_at = greatest(projection_offsets.last_event_at,
                                         EXCLUDED.last_event_at),
                updated_at = now()
            """,
            (consumer, "rabbitmq", last_at),
        )

    return write


class _Membership:
    """Which shard queues this projector consumes: a PostgreSQL advisory-lock slot each.

    Why advisory locks: they are released by PostgreSQL when a projector's session
    dies (kill -9 included), so the survivors see it leave without a heartbeat
    protocol. Single active consumer keeps order during handovers either way.
    """

    def __init__(self, database_url: str, group: str) -> None:
        self.database_url = database_url
        self.key = zlib.crc32(("sagaflow-rabbit-members:" + group).encode()) & 0x7FFFFFFF
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.slot: int | None = None

    async def join(self) -> None:
        from eventstore.migrate import psycopg_url

        self.conn = await psycopg.AsyncConnection.connect(
            psycopg_url(self.database_url), autocommit=True
        )
        for slot in range(MAX_MEMBERS):
            cur = await self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self.key, slot))
            row = await cur.fetchone()
            if row and row[0]:
                self.slot = slot
                return
        raise RuntimeError(f"more than {MAX_MEMBERS} projectors in one group")

    async def owned(self, shards: int) -> set[int]:
        assert self.conn is not None and self.slot is not None
        cur = await self.conn.execute(
            "SELECT objid::int FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s::oid AND objsubid = 2 "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (self.key,),
        )
        members = sorted({row[0] for row in await cur.fetchall()} | {self.slot})
        rank = members.index(self.slot)
        return {i for i in range(shards) if i % len(members) == rank}

    async def leave(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            with contextlib.suppress(Exception):
                await conn.close()


class Delivery(NamedTuple):
    """One delivery in the subscriber's inbox: where from, and the channel to ack it on."""

    delivered: DeliveredMessage
    queue: str
    shard: int
    channel: UnderlayChannel


class RabbitSubscriber(Subscriber):
    """A projector group member on the shard queues; acks after the commit."""

    deferred_retry = True

    def __init__(self, settings: Settings, pool: AsyncConnectionPool) -> None:
        rabbitmq_url(settings)
        assert settings.database_url
        self.settings = settings
        self.pool = pool
        self.group = settings.projector_group
        self.checkpoint = rabbit_checkpoint(self.group)
        self.channel: AbstractChannel | None = None
        self.connection: AbstractRobustConnection | None = None
        self.retry_queues: set[str] = set()
        self.inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        #: x-death headers of the batch in flight, by position (for retry_later)
        self.deaths: dict[Position, Any] = {}
        self.membership = _Membership(settings.database_url, self.group)

    async def replays_from_start(self) -> bool:
        """True when the group has no position yet and its queues predate the first event."""
        connection = await connect_rabbitmq(self.settings)
        try:
            await declare_group(await connection.channel(), self.settings, self.group)
        finally:
            await connection.close()
        await record_origin(self.settings, self.pool)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT (SELECT next_offset FROM projection_offsets WHERE consumer = %s "
                "AND topic = %s), EXISTS (SELECT 1 FROM projection_offsets "
                "WHERE consumer = %s AND topic = 'rabbitmq')",
                (self.group, ORIGIN, self.group),
            )
            row = await cur.fetchone()
        assert row is not None
        return row[0] == 0 and not row[1]

    async def run(self, deliver: Deliver, stop: asyncio.Event) -> None:
        """Consume the owned shard queues and deliver batches until ``stop`` is set."""
        s = self.settings
        self.connection = connection = await connect_rabbitmq(s)
        consuming: dict[int, tuple[AbstractChannel, UnderlayChannel]] = {}
        try:
            # one confirming channel for retries and dead letters; one channel per shard
            self.channel = await connection.channel(publisher_confirms=True)
            await declare_group(self.channel, s, self.group)
            await self.membership.join()
            loop = asyncio.get_running_loop()
            checked = 0.0
            while not stop.is_set():
                # Why check: a consumer on a dead connection is only told through its
                # callbacks, which stop; without this an idle projector would wait
                # forever after a broker restart instead of reconnecting.
                # The aiormq channel is checked too: a robust channel that reopened has a
                # new one, and our consumer (registered on the old one) is gone with it.
                if connection.is_closed or any(
                    c.is_closed or u.is_closed for c, u in consuming.values()
                ):
                    raise ConnectionError("the RabbitMQ connection was lost")
                if loop.time() - checked > 1.0:
                    checked = loop.time()
                    await self._rebalance(consuming)
                batch = await self._collect(stop)
                if batch:
                    await self._deliver(batch, deliver)
        finally:
            await self.membership.leave()
            with contextlib.suppress(Exception):
                await connection.close()

    async def _rebalance(
        self, consuming: dict[int, tuple[AbstractChannel, UnderlayChannel]]
    ) -> None:
        """Consume the shards this member owns now, give the others back.

        Called between batches only. A shard given back has its channel closed, which
        returns every delivery not yet acknowledged to the queue, in order, before the
        next owner (single active consumer) sees anything; the copies waiting in our
        inbox are dropped. Why a channel per shard: closing it must not return the
        deliveries of the shards we keep.
        """
        owned = await self.membership.owned(self.settings.rabbitmq_shards)
        for shard in sorted(set(consuming) - owned):
            channel, _ = consuming.pop(shard)
            kept = [item for item in _drain(self.inbox) if item[2] != shard]
            for item in kept:
                self.inbox.put_nowait(item)
            with contextlib.suppress(Exception):
                await channel.close()
        assert self.connection is not None
        for shard in sorted(owned - set(consuming)):
            channel = await self.connection.channel()
            # Why prefetch: it bounds unacked deliveries, and so how much a crash
            # makes the broker redeliver.
            await channel.set_qos(prefetch_count=self.settings.rabbitmq_prefetch)
            name = shard_queue(self.settings, self.group, shard)
            underlay = await channel.get_underlay_channel()

            # Why consume on the aiormq channel: aio-pika wraps each delivery in an
            # IncomingMessage and a second task, about a third of the projector's CPU
            # here; the delivery is acknowledged on the same channel after the commit.
            async def on_message(
                delivered: DeliveredMessage,
                name: str = name,
                shard: int = shard,
                underlay: UnderlayChannel = underlay,
            ) -> None:
                self.inbox.put_nowait(Delivery(delivered, name, shard, underlay))

            await underlay.basic_consume(name, on_message)
            consuming[shard] = (channel, underlay)
        if owned:
            log.debug("consuming shards %s", sorted(owned))

    async def _collect(self, stop: asyncio.Event) -> list[Delivery]:
        """Wait (a poll interval at most) for deliveries, then take what has arrived."""
        try:
            first = await asyncio.wait_for(
                self.inbox.get(), self.settings.projector_poll_interval_s
            )
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < self.settings.projector_batch_size and not self.inbox.empty():
            batch.append(self.inbox.get_nowait())
        # deliveries that reached us while their shard's channel was being given back:
        # the broker returned them to the queue, the next owner applies them
        return [item for item in batch if not item.channel.is_closed]

    async def _deliver(self, batch: list[Delivery], deliver: Deliver) -> None:
        messages = [to_message(d.delivered, d.queue, d.shard) for d in batch]
        self.deaths = {}
        for msg, d in zip(messages, batch, strict=True):
            headers = d.delivered.header.properties.headers
            if headers and headers.get("x-death"):
                self.deaths[msg.position] = headers["x-death"]
        last: dict[int, Delivery] = {}
        for d in batch:
            last[d.shard] = d

        async def settle() -> None:
            # Why one multiple-ack per shard channel on its last tag: a channel's
            # deliveries reach the inbox in tag order, and every earlier one was in this
            # or an earlier settled batch.
            for d in last.values():
                tag = d.delivered.delivery_tag
                assert tag is not None
                await d.channel.basic_ack(tag, multiple=True)

        await deliver(Batch(messages, self.checkpoint, settle))

    async def retry_later(self, message: Message, attempt: int, delay_s: float) -> None:
        """Send the message to its queue's retry queue for ``delay_s`` (TTL), confirmed."""
        assert self.channel is not None
        queue = message.position.source
        ms = max(1, int(delay_s * 1000))
        name = f"{queue}.retry.{ms}"
        if name not in self.retry_queues:
            await self.channel.declare_queue(
                name,
                durable=True,
                arguments={
                    "x-message-ttl": ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": queue,
                },
            )
            self.retry_queues.add(name)
        headers: dict[str, Any] = {k: v.decode(errors="replace") for k, v in message.header_pairs()}
        # Why carry x-death over: the broker adds to it on each expiry, and the next
        # delivery counts its attempt from it.
        deaths = self.deaths.get(message.position)
        if deaths:
            headers["x-death"] = deaths
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                message.body(),
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
            ),
            routing_key=name,
        )

    async def publish_dead_letter(self, message: Message, headers: dict[str, str]) -> None:
        """Copy the dead letter to the DLX (queue ``<exchange>.dlx.<group>``), confirmed."""
        assert self.channel is not None
        dlx = await self.channel.get_exchange(f"{self.settings.rabbitmq_exchange}.dlx")
        await dlx.publish(
            aio_pika.Message(
                message.body(),
                headers={
                    **{k: v.decode(errors="replace") for k, v in message.header_pairs()},
                    **headers,
                },
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.group,
        )


def _drain(inbox: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while not inbox.empty():
        items.append(inbox.get_nowait())
    return items


async def rabbit_backlog(settings: Settings, pool: AsyncConnectionPool) -> Backlog:
    """Messages ready in the group's shard queues (in-flight deliveries not counted)."""
    connection = await connect_rabbitmq(settings)
    try:
        channel = await connection.channel()
        ready = 0
        for shard in range(settings.rabbitmq_shards):
            try:
                queue = await channel.declare_queue(
                    shard_queue(settings, settings.projector_group, shard), passive=True
                )
            except aio_pika.exceptions.ChannelClosed:
                channel = await connection.channel()
                continue
            ready += queue.declaration_result.message_count or 0
    finally:
        await connection.close()
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT last_event_at FROM projection_offsets WHERE consumer = %s AND topic = %s",
            (settings.projector_group, "rabbitmq"),
        )
        row = await cur.fetchone()
    return Backlog(ready, row[0] if row else None)
