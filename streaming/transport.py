"""The transport port: how stored events travel from the relay to the projections.

Two roles, three implementations (``streaming.kafka``, ``streaming.rabbitmq``,
``streaming.embedded``), chosen by ``SAGAFLOW_TRANSPORT``:

* a **Publisher** sends a batch of stored events (``EncodedEvent``: the envelope
  already rendered as JSON by the store) and returns only when the broker
  confirmed every one of them (the relay advances its checkpoint after that);
* a **Subscriber** delivers batches of ``Message`` objects, each with an opaque
  ``Position``. Where the position lives in PostgreSQL (Kafka offsets, the feed
  cursor) the batch's ``checkpoint`` writes it in the read-model transaction; where
  the broker owns it (RabbitMQ) ``settle`` acknowledges after that commit.

Everything above this port speaks the event store's words: stream id, version and
a position token, never topic/partition/offset or queues.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventstore.envelope import EncodedEvent, RecordedEvent

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from eventstore.postgres import PostgresEventStore
    from sagaflow.settings import Settings


@dataclass(frozen=True, order=True)
class Position:
    """Where a message came from, opaque above the transport.

    ``source`` names the log or queue, ``lane`` the partition or shard, ``ordinal``
    the offset (Kafka), the global position (feed, RabbitMQ) or a body hash (a
    RabbitMQ message that is not an envelope). Dead letters and parked messages are
    keyed by it, so a redelivered message is recorded once.
    """

    source: str
    lane: int
    ordinal: int

    def token(self) -> str:
        """The position as one string: ``<source>/<lane>@<ordinal>`` (logs, dead
        letters and parked messages, the API)."""
        return f"{self.source}/{self.lane}@{self.ordinal}"

    @classmethod
    def parse(cls, token: str) -> Position:
        """Inverse of ``token``; ValueError on anything else.

        Why split at the last ``@`` and the last ``/``: a source (a queue name) may
        hold either character; the lane and ordinal are integers.
        """
        rest, at, ordinal = token.rpartition("@")
        source, slash, lane = rest.rpartition("/")
        try:
            if not (at and slash):
                raise ValueError
            return cls(source, int(lane), int(ordinal))
        except ValueError:
            raise ValueError(f"{token!r} is not a position token (source/lane@ordinal)") from None


@dataclass(frozen=True)
class Message:
    """One input to the projector, whatever transport delivered it.

    ``payload`` is the raw body (the JSON envelope); ``recorded`` is set when the
    source already parsed it (the embedded feed). ``attempt`` is how many times the
    transport has delivered it for processing (RabbitMQ counts its retries).
    """

    position: Position
    stream_id: str | None
    payload: bytes | None = None
    recorded: RecordedEvent | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    attempt: int = 1
    #: the AMQP headers as delivered (RabbitMQ), flattened only when asked for
    amqp_headers: Mapping[str, Any] | None = None

    def header_pairs(self) -> tuple[tuple[str, bytes], ...]:
        """The headers as (name, bytes) pairs; a RabbitMQ message's without ``x-*``.

        Why on demand: only dead letters and retries need them, and flattening a
        dozen headers per delivery was a visible share of the projector's CPU.
        """
        if self.amqp_headers is None:
            return self.headers
        return tuple(
            (str(k), str(v).encode())
            for k, v in self.amqp_headers.items()
            if not str(k).startswith("x-")
        )

    def body(self) -> bytes:
        """The envelope bytes (rendered from ``recorded`` when the source gave none)."""
        if self.payload is not None:
            return self.payload
        assert self.recorded is not None
        return json.dumps(self.recorded.envelope(), separators=(",", ":")).encode()


#: writes the source positions after a batch's messages (and when its last event was
#: recorded, for lag) inside the batch's transaction
Checkpoint = Callable[["AsyncConnection[Any]", Sequence[Message], datetime | None], Awaitable[None]]


async def no_checkpoint(conn: Any, messages: Sequence[Message], last_at: datetime | None) -> None:
    """For transports whose broker owns the positions (acknowledged after commit)."""


@dataclass
class Batch:
    """What a subscriber delivers: messages in per-stream order and how to settle them."""

    messages: list[Message]
    checkpoint: Checkpoint = no_checkpoint
    #: called after the batch's transaction committed (RabbitMQ acks here)
    settle: Callable[[], Awaitable[None]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Deliver = Callable[[Batch], Awaitable[None]]


@dataclass(frozen=True)
class Backlog:
    """Messages the transport holds for a subscriber, and when the last applied was recorded."""

    messages: int
    last_applied_at: datetime | None = None


class Publisher(ABC):
    """Sends stored events to the transport."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect (and declare the topology)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect; safe to call twice."""

    @abstractmethod
    async def publish(self, batch: Sequence[EncodedEvent]) -> None:
        """Send ``batch`` in order; return only when the broker confirmed all of it."""

    async def send(self, batch: Sequence[EncodedEvent]) -> Awaitable[None]:
        """Start sending ``batch`` after everything sent before; await the result for
        the broker's confirmation of all of it.

        The default confirms before returning (no pipelining); Kafka overrides it so
        the relay reads and sends the next batch while this one is acknowledged.
        """
        await self.publish(batch)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Subscriber(ABC):
    """Delivers a consumer group's messages in per-stream order, at least once."""

    #: True when a failing message can be handed back for a later, delayed attempt
    #: (RabbitMQ's TTL retry queues) instead of being retried in process.
    deferred_retry = False

    @abstractmethod
    async def run(self, deliver: Deliver, stop: asyncio.Event) -> None:
        """Deliver batches to ``deliver`` until ``stop`` is set.

        ``deliver`` returns after the batch's transaction committed (or raises); the
        subscriber then settles it. A batch that raised is delivered again.
        """

    async def replays_from_start(self) -> bool:
        """True when this group has no position yet and the transport holds every event
        from the first one (so a new read model needs no bootstrap from the store)."""
        return False

    async def retry_later(self, message: Message, attempt: int, delay_s: float) -> None:
        """Deliver ``message`` again after ``delay_s`` as attempt ``attempt + 1``."""
        raise NotImplementedError

    async def publish_dead_letter(  # noqa: B027 - optional hook
        self, message: Message, headers: dict[str, str]
    ) -> None:
        """Copy a dead letter to the transport's dead-letter destination, if it has one."""


def make_publisher(settings: Settings, pool: AsyncConnectionPool | None = None) -> Publisher:
    """The relay's publisher for ``SAGAFLOW_TRANSPORT`` (``pool``: the relay's database)."""
    from sagaflow.settings import Transport

    kind = settings.transport_kind
    if kind is Transport.KAFKA:
        from streaming.kafka import KafkaPublisher

        return KafkaPublisher(settings)
    if kind is Transport.RABBITMQ:
        from streaming.rabbitmq import RabbitPublisher

        return RabbitPublisher(settings, pool)
    raise ValueError("SAGAFLOW_TRANSPORT=embedded has no relay: projections read the store")


def make_subscriber(
    settings: Settings, pool: AsyncConnectionPool, store: PostgresEventStore
) -> Subscriber:
    """The projector's subscriber for ``SAGAFLOW_TRANSPORT``."""
    from sagaflow.settings import Transport

    kind = settings.transport_kind
    if kind is Transport.KAFKA:
        from streaming.kafka import KafkaSubscriber

        return KafkaSubscriber(settings, pool)
    if kind is Transport.RABBITMQ:
        from streaming.rabbitmq import RabbitSubscriber

        return RabbitSubscriber(settings, pool)
    from streaming.embedded import FeedSubscriber

    return FeedSubscriber(settings, pool, store)


async def transport_backlog(settings: Settings, pool: AsyncConnectionPool) -> Backlog:
    """What the transport still holds for the projector group (0 in embedded mode)."""
    from sagaflow.settings import Transport

    kind = settings.transport_kind
    if kind is Transport.KAFKA:
        from streaming.kafka import kafka_backlog

        return await kafka_backlog(settings, pool)
    if kind is Transport.RABBITMQ:
        from streaming.rabbitmq import rabbit_backlog

        return await rabbit_backlog(settings, pool)
    return Backlog(0)


class TransportRefused(Exception):
    """The broker refused the configured credentials or certificate: waiting will not help.

    Raised instead of retrying forever, as one line naming the settings to check.
    """


def refused(exc: BaseException) -> TransportRefused | None:
    """A TransportRefused when ``exc`` (or what caused it) is an authentication failure."""
    import ssl

    from aiokafka import errors as kafka_errors
    from aiormq import exceptions as amqp_errors

    fatal: tuple[type[BaseException], ...] = (
        kafka_errors.AuthenticationFailedError,
        kafka_errors.AuthenticationMethodNotSupported,
        kafka_errors.SaslAuthenticationFailed,
        kafka_errors.UnsupportedSaslMechanismError,
        kafka_errors.IllegalSaslStateError,
        amqp_errors.AuthenticationError,
        amqp_errors.ProbableAuthenticationError,
        ssl.SSLCertVerificationError,
    )
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, fatal):
            broker = "RabbitMQ" if isinstance(seen, amqp_errors.AMQPError) else "Kafka"
            hint = (
                "SAGAFLOW_RABBITMQ_URL / _USERNAME / _PASSWORD / _SSL_*"
                if broker == "RabbitMQ"
                else "SAGAFLOW_KAFKA_SASL_* / _SSL_* / _SECURITY_PROTOCOL"
            )
            reason = str(seen).splitlines()[0][:200] if str(seen) else type(seen).__name__
            return TransportRefused(f"{broker} refused the connection ({reason}): check {hint}")
        seen = seen.__cause__ or seen.__context__
    return None


async def why_refused(settings: Settings, exc: BaseException) -> TransportRefused | None:
    """``refused(exc)``, or, when aiokafka only says it could not bootstrap, the reason
    a direct connection to the first broker gives (aiokafka logs and drops it)."""
    found = refused(exc)
    if found is not None or settings.kafka_security_protocol == "PLAINTEXT":
        return found
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaConnectionError

    if not isinstance(exc, KafkaConnectionError) or not settings.kafka_bootstrap:
        return None
    from sagaflow.clients import kafka_security

    host, _, port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
    try:
        conn = await asyncio.wait_for(
            create_conn(host, int(port), request_timeout_ms=5000, **kafka_security(settings)), 10
        )
        conn.close()
    except Exception as probe:
        return refused(probe)
    return None
