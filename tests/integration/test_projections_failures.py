"""The projector under failures: poison events, bad input, SIGKILL mid-batch."""

from __future__ import annotations

import asyncio
import json
import os
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
from tests.integration.test_projections_pipeline import SKUS, caught_up, settings_for_test

pytestmark = pytest.mark.integration


@pytest.fixture
def stream_settings(settings: Settings, database_url: str, kafka_bootstrap: str, unique: str):
    """Settings of one test: its own database, topic, dead-letter topic and group."""
    return settings_for_test(settings, database_url, unique)


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
    await register_products(pg_store, SKUS)
    written = await run_orders(pg_store, 200, prefix="p-", skus=SKUS)
    assert written > 2500
    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: run_projector(s, stop, projections=projections)) as projector,
    ):
        await wait_for(lambda: caught_up(pg_store, s), what="catch-up", watch=projector)

    (letter,) = await list_dead_letters(pg_store.pool)
    assert (letter.stream_id, letter.version, letter.handler) == ("order-p-17", 4, "poison_probe")
    assert letter.attempts == s.projector_retry_attempts
    assert "probe refuses order-p-17" in letter.error
    assert letter.topic == s.kafka_topic and letter.offset >= 0
    assert letter.parked >= 1, "the stream's later events are held back"
    (dlt,) = await read_topic(s, s.kafka_dead_letter_topic)
    headers = {k: v.decode() for k, v in dlt.headers}
    assert headers["dlt.handler"] == "poison_probe" and headers["dlt.offset"] == str(letter.offset)
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
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
        await producer.start()
        try:
            for key, value in [
                (b"junk-1", b"\x00 this is not an envelope"),
                (b"order-bad", _envelope(event_type="OrderTeleported")),
                (b"order-bad", _envelope(event_id="2b3a6f0e-0000-4000-8000-000000000002", version=2,
                                         event_type="OrderSubmitted", data={"total_cents": 5})),
                (b"order-old", _envelope(stream_id="order-old", schema_version=0,
                                         event_id="2b3a6f0e-0000-4000-8000-000000000003")),
            ]:  # fmt: skip
                await producer.send_and_wait(s.kafka_topic, value, key=key)
        finally:
            await producer.stop()
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

    assert s.database_url and s.kafka_bootstrap
    env = {
        **os.environ,
        "SAGAFLOW_DATABASE_URL": s.database_url,
        "SAGAFLOW_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "SAGAFLOW_KAFKA_ENABLED": "true",
        "SAGAFLOW_KAFKA_TOPIC": s.kafka_topic,
        "SAGAFLOW_KAFKA_DEAD_LETTER_TOPIC": s.kafka_dead_letter_topic,
        "SAGAFLOW_PROJECTOR_GROUP": s.projector_group,
        "SAGAFLOW_PROJECTOR_BATCH_SIZE": "50",
    }

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "projections", "projector", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    first = await start()

    async def some_applied() -> bool:
        return await _offsets_done(pg_store, s) > 0 and first.returncode is None

    await wait_for(some_applied, what="first batches", timeout_s=60, interval_s=0.02)
    first.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    assert await _offsets_done(pg_store, s) < written, "killed before the end"

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


async def _offsets_done(store: PostgresEventStore, settings: Settings) -> int:
    async with store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM projection_offsets WHERE consumer = %s",
            (settings.projector_group,),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])
