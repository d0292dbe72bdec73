"""The projector under failures on each broker: poison events, bad input, gaps, SIGKILL."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Mapping, Sequence

import pytest
from aiokafka import AIOKafkaProducer

from bench.workload import background, register_products, run_orders, wait_for
from eventstore.postgres import PostgresEventStore
from projections import queries
from projections.deadletters import list_dead_letters, replay_dead_letter, skip_dead_letter
from projections.handlers import Conn, Pair, Projection, default_projections
from projections.runner import run_projector
from projections.verify import verify_against_rebuild
from sagaflow.settings import Settings
from streaming.kafka import read_topic
from streaming.relay import run_relay
from streaming.transport import Position
from tests.integration.streaming_support import (
    BROKERS,
    SKUS,
    caught_up,
    drain_queue,
    process_env,
    transport_settings,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=BROKERS)
def stream_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings of one test on each broker: its own database, topic / exchange, group."""
    return transport_settings(request, request.param)


async def projector_ready(store: PostgresEventStore, projections: Sequence[Projection]) -> bool:
    """True once the projector bootstrapped (or skipped bootstrapping) its read models."""
    async with store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM projection_bootstraps WHERE projection = ANY(%s)",
            ([p.name for p in projections],),
        )
        row = await cur.fetchone()
    return row is not None and row[0] == len(projections)


async def send_raw(settings: Settings, messages: Sequence[tuple[bytes, bytes]]) -> None:
    """Put (stream id, body) messages on the wire the way a foreign producer would."""
    if settings.kafka_mode:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for key, value in messages:
                await producer.send_and_wait(settings.kafka_topic, value, key=key)
        finally:
            await producer.stop()
        return
    import aio_pika

    from sagaflow.clients import connect_rabbitmq

    connection = await connect_rabbitmq(settings)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(settings.rabbitmq_exchange)
        for key, value in messages:
            await exchange.publish(
                aio_pika.Message(value, headers={"stream_id": key.decode()}),
                routing_key="Foreign.Thing",
            )
    finally:
        await connection.close()


class PoisonProbe(Projection):
    """A read model whose handler fails on one stream's submission while armed."""

    name = "poison_probe"
    tables = ()
    stream_types = frozenset({"Order"})

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.armed = True

    async def apply(self, conn: Conn, tables: Mapping[str, str], pairs: Sequence[Pair]) -> None:
        for recorded, _ in pairs:
            poisoned = recorded.stream_id == self.stream_id
            if self.armed and poisoned and recorded.event_type == "OrderSubmitted":
                raise RuntimeError(f"probe refuses {recorded.stream_id}")


async def test_one_poison_event_among_thousands_is_dead_lettered_and_its_stream_held_until_replay(
    stream_settings: Settings, pg_store: PostgresEventStore
):
    s = stream_settings
    probe = PoisonProbe("order-p-17")
    projections = [*default_projections(), probe]
    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: run_projector(s, stop, projections=projections)) as projector,
    ):
        # written once the projector follows the transport, so the poison arrives there
        await wait_for(lambda: projector_ready(pg_store, projections), what="projector")
        await register_products(pg_store, SKUS)
        written = await run_orders(pg_store, 200, prefix="p-", skus=SKUS)
        assert written > 2500
        await wait_for(lambda: caught_up(pg_store, s), what="catch-up", watch=projector)

    (letter,) = await list_dead_letters(pg_store.pool)
    assert (letter.stream_id, letter.version, letter.handler) == ("order-p-17", 4, "poison_probe")
    assert letter.attempts == s.projector_retry_attempts
    assert "probe refuses order-p-17" in letter.error
    assert letter.parked >= 1, "the stream's later events are held back"
    position = Position.parse(letter.position)
    if s.kafka_mode:
        assert position.source == s.kafka_topic and position.ordinal >= 0
        (dlt,) = await read_topic(s, s.kafka_dead_letter_topic)
        headers = {k: v.decode() for k, v in dlt.headers}
        assert headers["dlt.offset"] == str(position.ordinal)
    else:
        # retried through the TTL queues (attempts counted from x-death), then the DLX
        assert position.source.startswith(f"{s.rabbitmq_exchange}.{s.projector_group}.")
        assert position.ordinal > 0, "keyed by the event's global position"
        (copy,) = await drain_queue(s, f"{s.rabbitmq_exchange}.dlx.{s.projector_group}")
        headers = {k: str(v) for k, v in copy.headers.items()}
    assert headers["dlt.position"] == letter.position
    assert headers["dlt.handler"] == "poison_probe"
    assert headers["dlt.attempts"] == str(s.projector_retry_attempts)

    stuck = await queries.get_order_summary(pg_store.pool, "p-17")
    assert stuck is not None and stuck.version == 3, "applied up to the poison, no further"
    for i in range(200):
        if i != 17:
            summary = await queries.get_order_summary(pg_store.pool, f"p-{i}")
            assert summary is not None
            assert summary.version == await pg_store.stream_version(f"order-p-{i}")

    probe.armed = False  # the fix is deployed
    result = await replay_dead_letter(pg_store.pool, letter.id, projections, pg_store.upcasters)
    assert (result.status, result.released, result.still_parked) == (
        "replayed",
        letter.parked,
        0,
    )
    healed = await queries.get_order_summary(pg_store.pool, "p-17")
    assert healed is not None
    assert healed.version == await pg_store.stream_version("order-p-17")
    assert await list_dead_letters(pg_store.pool) == []
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt


def _envelope(**fields: object) -> bytes:
    base = {
        "event_id": "2b3a6f0e-0000-4000-8000-000000000001",
        "event_type": "OrderCreated",
        "schema_version": 1,
        "stream_id": "order-bad",
        "stream_type": "Order",
        "version": 1,
        "global_position": 1,
        "recorded_at": "2026-01-01T00:00:00+00:00",
        "data": {"order_id": "bad", "customer_id": "c"},
        "metadata": {},
    }
    return json.dumps({**base, **fields}).encode()


async def test_bad_messages_are_dead_lettered_with_their_reason_without_crash_loop_or_silent_skip(
    stream_settings: Settings, pg_store: PostgresEventStore
):
    s = stream_settings
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 20, prefix="g-", skus=SKUS)
    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        await wait_for(lambda: caught_up(pg_store, s), what="topic ready", watch=projector)
        await send_raw(s, [
                (b"junk-1", b"\x00 this is not an envelope"),
                (b"order-bad", _envelope(event_type="OrderTeleported")),
                (b"order-bad", _envelope(event_id="2b3a6f0e-0000-4000-8000-000000000002", version=2,
                                         event_type="OrderSubmitted", data={"total_cents": 5})),
                (b"order-old", _envelope(stream_id="order-old", schema_version=0,
                                         event_id="2b3a6f0e-0000-4000-8000-000000000003")),
        ])  # fmt: skip
        await run_orders(pg_store, 10, prefix="g2-", skus=SKUS, seed=3)

        async def three_letters() -> bool:
            return len(await list_dead_letters(pg_store.pool)) == 3

        await wait_for(three_letters, what="dead letters", watch=projector)
        await wait_for(lambda: caught_up(pg_store, s), what="later events", watch=projector)
        assert not projector.done(), "no crash"

    letters = {d.stream_id: d for d in await list_dead_letters(pg_store.pool)}
    assert letters["junk-1"].handler == "envelope"
    assert "not a valid event envelope" in letters["junk-1"].error
    assert letters["order-bad"].handler == "decode"
    assert "unknown event type 'OrderTeleported'" in letters["order-bad"].error
    assert letters["order-bad"].parked == 1, "its stream's next event is held, not skipped"
    assert "no upcaster from OrderCreated v0" in letters["order-old"].error
    assert all(d.attempts == 1 for d in letters.values()), "no retries for unreadable input"
    assert await queries.get_order_summary(pg_store.pool, "g2-9") is not None

    skipped = await skip_dead_letter(
        pg_store.pool, letters["order-bad"].id, default_projections(), pg_store.upcasters
    )
    # the held event (an order submitted without creation) now fails on its own
    assert skipped.status == "skipped" and skipped.new_dead_letter is not None
    assert "unknown order 'bad'" in skipped.new_dead_letter
    remaining = await list_dead_letters(pg_store.pool)
    assert {(d.stream_id, d.version) for d in remaining} == {
        ("junk-1", None),
        ("order-old", 1),
        ("order-bad", 2),
    }


async def test_projector_killed_mid_batch_resumes_to_read_models_equal_to_a_rebuild(
    stream_settings: Settings, pg_store: PostgresEventStore
):
    s = stream_settings
    await register_products(pg_store, SKUS)
    written = await run_orders(pg_store, 250, prefix="x-", skus=SKUS)
    async with background(lambda stop: run_relay(s, stop)) as relay:
        await wait_for(lambda: _relay_done(pg_store, s), what="relay", watch=relay)

    env = process_env(s, SAGAFLOW_PROJECTOR_BATCH_SIZE="50")
    total = await _order_events(pg_store)

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "projections", "projector", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    first = await start()

    async def some_applied() -> bool:
        return await _applied(pg_store) > 0 and first.returncode is None

    await wait_for(some_applied, what="first batches", timeout_s=60, interval_s=0.02)
    first.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    assert await _applied(pg_store) < total, "killed with work pending"
    assert written > total

    second = await start()
    try:
        await wait_for(lambda: caught_up(pg_store, s), what="resume", timeout_s=90)
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 30) == 0
    rebuild_cli = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "projections", "projections", "rebuild", "order_summary",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await rebuild_cli.communicate()
    assert rebuild_cli.returncode == 0, out.decode()
    assert b"rebuilt order_summary" in out
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt


async def _relay_done(store: PostgresEventStore, settings: Settings) -> bool:
    from streaming.relay import relay_lag

    return (await relay_lag(store, settings.relay_name)).events == 0


async def _applied(store: PostgresEventStore) -> int:
    """Order events applied to order_summary so far (its watermarks' sum)."""
    async with store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(version), 0) FROM projection_watermarks "
            "WHERE projection = 'order_summary'"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _order_events(store: PostgresEventStore) -> int:
    async with store.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM events WHERE stream_type = 'Order'")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])
