"""Integration subscribers: another service follows sagaflow's events without its database.

``sagaflow subscribe --pattern 'Order.*' --queue NAME [--webhook URL]`` declares a
durable quorum queue of its own, binds it to the events exchange with the pattern
(RabbitMQ topic syntax: ``*`` one word, ``#`` any), and hands each event to a sink:
stdout (one JSON line) or an HTTP POST of the envelope. A failing POST is retried
with exponential backoff; after SAGAFLOW_SUBSCRIBER_RETRY_ATTEMPTS the message goes
to the dead-letter queue ``NAME.dead`` with the reason in ``x-sagaflow-error``. A
message that is not a sagaflow envelope goes there at once. Delivery is at least
once: acknowledgements follow the sink's success, so a crash re-delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from eventstore.envelope import RecordedEvent
from sagaflow.clients import connect_rabbitmq
from sagaflow.settings import Settings
from streaming.rabbitmq import declare_events_exchange

log = logging.getLogger("sagaflow.subscribe")

#: receives one envelope (as a dict); raises to have it retried, then dead-lettered
Sink = Callable[[dict[str, Any]], Awaitable[None]]


class NotAnEnvelope(ValueError):
    """The message on the wire is not a sagaflow event envelope."""


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The envelope of a message body; NotAnEnvelope says why not."""
    try:
        raw = json.loads(body)
        if not isinstance(raw, dict):
            raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
        RecordedEvent.from_envelope(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise NotAnEnvelope(f"not a sagaflow event envelope: {type(exc).__name__}: {exc}") from None
    return raw


def print_sink(out: Any = None) -> Sink:
    """One JSON line per event on stdout."""

    async def sink(envelope: dict[str, Any]) -> None:
        stream = out or sys.stdout
        stream.write(json.dumps(envelope, separators=(",", ":")) + "\n")
        stream.flush()

    return sink


def webhook_sink(url: str, timeout_s: float = 10.0) -> Sink:
    """POST each envelope as JSON; any answer but 2xx is a failure (retried)."""
    import httpx

    client = httpx.AsyncClient(timeout=timeout_s)

    async def sink(envelope: dict[str, Any]) -> None:
        response = await client.post(
            url,
            json=envelope,
            headers={
                "X-Sagaflow-Event-Id": str(envelope["event_id"]),
                "X-Sagaflow-Event-Type": str(envelope["event_type"]),
            },
        )
        response.raise_for_status()

    return sink


async def run_subscriber(
    settings: Settings,
    pattern: str,
    queue_name: str,
    sink: Sink,
    stop: asyncio.Event,
    *,
    ready: asyncio.Event | None = None,
) -> None:
    """Bind ``queue_name`` to the events exchange with ``pattern`` and feed ``sink``."""
    connection = await connect_rabbitmq(settings)
    try:
        channel = await connection.channel(publisher_confirms=True)
        # Why prefetch 1: a subscriber's events keep their exchange order, and a
        # failing one holds the next back instead of being overtaken.
        await channel.set_qos(prefetch_count=1)
        exchange = await declare_events_exchange(channel, settings)
        dead = await channel.declare_queue(
            f"{queue_name}.dead", durable=True, arguments={"x-queue-type": "quorum"}
        )
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key=pattern)
        if ready is not None:
            ready.set()
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(inbox.put)
        while not stop.is_set():
            if connection.is_closed:
                raise ConnectionError("the RabbitMQ connection was lost")
            try:
                incoming = await asyncio.wait_for(inbox.get(), 0.5)
            except TimeoutError:
                continue
            await _handle(settings, incoming, sink, channel, dead.name)
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


async def _handle(
    settings: Settings,
    incoming: AbstractIncomingMessage,
    sink: Sink,
    channel: Any,
    dead_queue: str,
) -> None:
    try:
        envelope = parse_envelope(incoming.body)
    except NotAnEnvelope as exc:
        await _dead_letter(channel, dead_queue, incoming, str(exc), 1)
        return
    delay = settings.subscriber_backoff_initial_s
    for attempt in range(1, settings.subscriber_retry_attempts + 1):
        try:
            await sink(envelope)
            await incoming.ack()
            return
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if attempt == settings.subscriber_retry_attempts:
                await _dead_letter(channel, dead_queue, incoming, error, attempt)
                return
            log.warning("attempt %d failed (%s); retrying in %.1fs", attempt, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)


async def _dead_letter(
    channel: Any, dead_queue: str, incoming: AbstractIncomingMessage, error: str, attempts: int
) -> None:
    # Why publish-then-ack (not reject): the dead letter carries its reason; a crash
    # in between leaves the original to be delivered again (dead-lettered twice at worst).
    log.error("dead-lettering %s after %d attempt(s): %s", incoming.message_id, attempts, error)
    await channel.default_exchange.publish(
        aio_pika.Message(
            incoming.body,
            headers={
                **(incoming.headers or {}),
                "x-sagaflow-error": error[:1000],
                "x-sagaflow-attempts": attempts,
                "x-sagaflow-routing-key": incoming.routing_key or "",
            },
            message_id=incoming.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=dead_queue,
    )
    await incoming.ack()
