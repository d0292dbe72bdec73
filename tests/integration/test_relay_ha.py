"""Relay high availability: two relay processes, one publishes; kill -9 the active one
under load and the standby takes over from the checkpoint; the epoch fence; a second
checkpoint name for one destination refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench.workload import background, register_products, run_orders, wait_for
from eventstore.envelope import START
from eventstore.postgres import PostgresEventStore
from sagaflow.settings import Settings
from streaming.kafka import read_topic
from streaming.lease import LeaseLost, LeaseStatus, RelayLease, destination, lease_status
from streaming.relay import Relay, load_checkpoint, relay_lag, save_checkpoint
from tests.integration.streaming_support import (
    BROKERS,
    SKUS,
    OrderWriter,
    declare_audit_queue,
    drain_queue,
    process_env,
    transport_settings,
)

pytestmark = pytest.mark.integration

#: the promise: the standby publishes again within this after the active relay dies
TAKEOVER_BOUND_S = 5.0


@pytest.fixture(params=BROKERS)
def stream_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings of one test on each broker."""
    return transport_settings(request, request.param)


@pytest.fixture
def kafka_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings of one Kafka test."""
    return transport_settings(request, "kafka")


async def _lease(store: PostgresEventStore, settings: Settings) -> LeaseStatus | None:
    async with store.pool.connection() as conn:
        return await lease_status(conn, destination(settings))


async def _held_by(store: PostgresEventStore, settings: Settings, holder: str) -> bool:
    status = await _lease(store, settings)
    return status is not None and status.held and status.holder == holder


@contextlib.asynccontextmanager
async def relay_process(
    settings: Settings, relay_id: str, log: Path, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``sagaflow relay`` as its own process (log in ``log``); stopped by pid after."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sagaflow.cli",
            "relay",
            env=process_env(settings, SAGAFLOW_RELAY_ID=relay_id, **env),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wire(settings: Settings, audit: str) -> list[tuple[str, str, int, bytes]]:
    """(event id, stream id, version, body) of everything published, in wire order
    (Kafka: per partition, a stream lives in one; RabbitMQ: the audit queue's order)."""
    if settings.kafka_mode:
        out = []
        for record in await read_topic(settings, settings.kafka_topic):
            h = {k: v.decode() for k, v in record.headers}
            out.append((h["event_id"], h["stream_id"], int(h["version"]), bytes(record.value)))
        return out
    return [
        (
            str(m.headers["event_id"]),
            str(m.headers["stream_id"]),
            int(str(m.headers["version"])),
            bytes(m.body),
        )
        for m in await drain_queue(settings, audit)
    ]


async def _wire_count(settings: Settings, audit: str) -> int:
    """How many messages are on the wire (nothing consumed)."""
    if settings.kafka_mode:
        return len(await read_topic(settings, settings.kafka_topic))
    from sagaflow.clients import connect_rabbitmq

    connection = await connect_rabbitmq(settings)
    try:
        queue = await (await connection.channel()).declare_queue(audit, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


def _check_wire(wire: list[tuple[str, str, int, bytes]], feed: list[Any]) -> int:
    """Every stored event on the wire; per stream, the versions in order once exact
    re-deliveries are dropped; each copy of an event identical. Returns the copies."""
    assert {e for e, _, _, _ in wire} == {str(e.event_id) for e in feed}, "an event missing"
    copies: dict[str, set[tuple[str, int, bytes]]] = defaultdict(set)
    for event_id, stream, version, body in wire:
        copies[event_id].add((stream, version, body))
    assert all(len(c) == 1 for c in copies.values()), "a re-delivery differs from the original"
    seen: dict[str, int] = defaultdict(int)
    for _, stream, version, _ in wire:
        if version <= seen[stream]:
            continue  # a re-delivery of what this stream already had
        assert version == seen[stream] + 1, f"{stream}: v{version} after v{seen[stream]}"
        seen[stream] = version
    return len(wire) - len(feed)


async def test_two_relays_publish_once_and_the_standby_takes_over_within_5s_of_a_kill_9(
    stream_settings: Settings, pg_store: PostgresEventStore, unique: str, tmp_path: Path
):
    s = stream_settings
    audit = f"audit-{unique}"
    if not s.kafka_mode:
        await declare_audit_queue(s, audit)
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 30, prefix="ha-", skus=SKUS)
    async with relay_process(s, "relay-a", tmp_path / "a.log") as a:
        await wait_for(lambda: _held_by(pg_store, s, "relay-a"), what="relay-a active")
        async with relay_process(s, "relay-b", tmp_path / "b.log") as b:

            async def b_stands_by() -> bool:
                return "standing by" in (tmp_path / "b.log").read_text()

            await wait_for(b_stands_by, what="relay-b standing by")

            async def drained() -> bool:
                return (await relay_lag(pg_store, s.relay_name)).events == 0

            await wait_for(drained, what="first events relayed")
            before = await pg_store.read_feed(limit=100_000)
            # both relays ran while these were published: exactly one copy of each
            assert await _wire_count(s, audit) == len(before), "only one relay publishes"

            writer = OrderWriter(pg_store, "hal", pause_s=0.01)
            await asyncio.sleep(1.5)
            a.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await a.wait()
            checkpoint = await load_checkpoint(pg_store.pool, s.relay_name)

            async def b_publishes() -> bool:
                moved = await load_checkpoint(pg_store.pool, s.relay_name) != checkpoint
                return moved and await _held_by(pg_store, s, "relay-b")

            await wait_for(b_publishes, what="relay-b publishing", interval_s=0.05, watch=None)
            takeover_s = time.monotonic() - killed
            await asyncio.sleep(1.5)
            assert await writer.stop() > 10
            await wait_for(drained, what="relay-b caught up", timeout_s=60)
            assert b.returncode is None, (tmp_path / "b.log").read_text()
            status = await _lease(pg_store, s)
    assert takeover_s <= TAKEOVER_BOUND_S, f"took over after {takeover_s:.1f}s"
    assert status is not None and (status.holder, status.epoch, status.takeovers) == (
        "relay-b",
        2,
        1,
    )
    feed = await pg_store.read_feed(limit=100_000)
    duplicates = _check_wire(await _wire(s, audit), feed)
    # what relay-a sent and never checkpointed is sent again: at most its batches in flight
    assert duplicates <= 2 * s.relay_batch_size
    b_log = (tmp_path / "b.log").read_text()
    assert "relay relay-b: active for" in b_log and "after relay-a" in b_log, b_log


async def _terminate_lock_session(store: PostgresEventStore, holder: str) -> None:
    """End the lease's PostgreSQL session as a broken connection would."""
    async with store.pool.connection() as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"sagaflow relay {holder}",),
        )


async def test_a_checkpoint_written_under_an_old_epoch_is_refused(
    kafka_settings: Settings, pg_store: PostgresEventStore
):
    s = kafka_settings
    assert s.database_url
    await register_products(pg_store, SKUS)
    feed = await pg_store.read_feed(limit=100)
    stop = asyncio.Event()
    old = RelayLease(s, s.database_url, holder="old")
    new = RelayLease(s, s.database_url, holder="new")
    try:
        stale = await old.acquire(stop)
        assert stale is not None and stale.epoch == 1
        await save_checkpoint(pg_store.pool, s.relay_name, feed[0].cursor, fence=stale)
        await _terminate_lock_session(pg_store, "old")
        current = await asyncio.wait_for(new.acquire(stop), 10)
        assert current is not None and current.epoch == 2
        with pytest.raises(LeaseLost, match="epoch 1.*epoch 2"):
            await save_checkpoint(pg_store.pool, s.relay_name, feed[-1].cursor, fence=stale)
        assert await load_checkpoint(pg_store.pool, s.relay_name) == feed[0].cursor
        await save_checkpoint(pg_store.pool, s.relay_name, feed[-1].cursor, fence=current)
        assert await load_checkpoint(pg_store.pool, s.relay_name) == feed[-1].cursor
        # the old holder's heartbeat notices too (its session is gone)
        await asyncio.wait_for(old.lost.wait(), s.relay_lease_timeout_s + 2)
    finally:
        await old.release()
        await new.release()


async def test_a_relay_whose_lock_session_dies_mid_batch_cannot_move_the_checkpoint(
    kafka_settings: Settings, pg_store: PostgresEventStore
):
    """The hazard the fence exists for: the active relay's lock session ends while its
    batch is at the broker (paused, cut off), a standby takes over, then the old relay
    gets its confirmation: its checkpoint is refused and it stands by."""
    s = kafka_settings.model_copy(update={"relay_batch_size": 50, "relay_id": "old"})
    assert s.database_url
    await register_products(pg_store, SKUS)
    await run_orders(pg_store, 10, prefix="f-", skus=SKUS)
    feed = await pg_store.read_feed(limit=100_000)
    new = RelayLease(s, s.database_url, holder="new")
    taken: list[int] = []

    async def lose_the_lock_then_confirm(batch: Any) -> None:
        if taken:
            return
        await _terminate_lock_session(pg_store, "old")
        fence = await asyncio.wait_for(new.acquire(asyncio.Event()), 10)
        assert fence is not None
        taken.append(fence.epoch)

    old = RelayLease(s, s.database_url)
    relay = Relay(pg_store, s, after_publish=lose_the_lock_then_confirm, lease=old)
    try:
        async with background(relay.run) as running:

            async def old_stands_by() -> bool:
                return bool(taken) and old.fence is None

            await wait_for(old_stands_by, what="the old relay standing by", watch=running)
            assert await load_checkpoint(pg_store.pool, s.relay_name) == START, "fenced"
            assert relay.published == 0
            await new.release()  # the old relay takes the lease back (epoch 3) and resumes

            async def done() -> bool:
                return await load_checkpoint(pg_store.pool, s.relay_name) == feed[-1].cursor

            await wait_for(done, what="the old relay resuming", watch=running)
            assert old.fence is not None and old.fence.epoch == taken[0] + 1 == 3
    finally:
        await new.release()
    records = await read_topic(s, s.kafka_topic)
    assert {dict(r.headers)["event_id"].decode() for r in records} == {
        str(e.event_id) for e in feed
    }


async def test_a_second_relay_with_another_checkpoint_name_for_the_destination_is_refused(
    kafka_settings: Settings, pg_store: PostgresEventStore, tmp_path: Path
):
    s = kafka_settings
    async with relay_process(s, "relay-a", tmp_path / "a.log") as a:
        await wait_for(lambda: _held_by(pg_store, s, "relay-a"), what="relay-a active")
        other = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sagaflow.cli",
            "relay",
            env=process_env(s, SAGAFLOW_RELAY_ID="relay-x", SAGAFLOW_RELAY_NAME="other"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(other.communicate(), 60)
        assert a.returncode is None
    assert other.returncode == 2, err.decode()
    lines = [line for line in err.decode().splitlines() if not line[:4].isdigit()]
    assert len(lines) == 1 and "Traceback" not in err.decode(), err.decode()
    assert f"kafka:{s.kafka_topic} is already published from checkpoint 'main'" in lines[0]
    assert "SAGAFLOW_RELAY_NAME=other" in lines[0]
    assert await load_checkpoint(pg_store.pool, "other") == START


def test_the_embedded_transport_has_no_relay_to_run(database_url: str) -> None:
    import subprocess

    env = {
        **os.environ,
        "SAGAFLOW_DATABASE_URL": database_url,
        "SAGAFLOW_TRANSPORT": "embedded",
    }
    env.pop("SAGAFLOW_KAFKA_ENABLED", None)
    done = subprocess.run(
        [sys.executable, "-m", "sagaflow.cli", "relay"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "embedded has no relay" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_paused_relay_loses_its_lease_and_stands_by_when_it_wakes(
    kafka_settings: Settings, pg_store: PostgresEventStore, tmp_path: Path
):
    """SIGSTOP keeps the active relay's sockets open: its lock goes only when its
    session times out (SAGAFLOW_RELAY_LEASE_TIMEOUT_S); woken, it must not publish
    beside the new holder nor move the checkpoint, and it serves as the standby."""
    s = kafka_settings
    timeout = {"SAGAFLOW_RELAY_LEASE_TIMEOUT_S": "2", "SAGAFLOW_RELAY_LEASE_HEARTBEAT_S": "0.5"}
    await register_products(pg_store, SKUS)
    async with relay_process(s, "relay-a", tmp_path / "a.log", **timeout) as a:
        await wait_for(lambda: _held_by(pg_store, s, "relay-a"), what="relay-a active")
        async with relay_process(s, "relay-b", tmp_path / "b.log", **timeout) as b:
            await _paused_then_woken(s, pg_store, tmp_path, a, b)
        status = await _lease(pg_store, s)
        assert a.returncode is None
    assert status is not None and (status.epoch, status.takeovers) == (3, 2)
    feed = await pg_store.read_feed(limit=100_000)
    _check_wire(await _wire(s, ""), feed)


async def _paused_then_woken(
    s: Settings,
    pg_store: PostgresEventStore,
    tmp_path: Path,
    a: asyncio.subprocess.Process,
    b: asyncio.subprocess.Process,
) -> None:
    """SIGSTOP relay-a (active) until relay-b holds the lease, SIGCONT it, check it
    stands by, then stop relay-b and check relay-a takes over again."""

    async def b_stands_by() -> bool:
        return "standing by" in (tmp_path / "b.log").read_text()

    await wait_for(b_stands_by, what="relay-b standing by")
    a.send_signal(signal.SIGSTOP)
    paused = time.monotonic()
    try:
        await run_orders(pg_store, 10, prefix="p-", skus=SKUS)
        await wait_for(lambda: _held_by(pg_store, s, "relay-b"), what="relay-b active")
        took_over_s = time.monotonic() - paused
    finally:
        a.send_signal(signal.SIGCONT)

    async def a_stood_by() -> bool:
        return "lost the lease" in (tmp_path / "a.log").read_text()

    await wait_for(a_stood_by, what="relay-a standing by")
    await run_orders(pg_store, 10, prefix="q-", skus=SKUS)

    async def drained() -> bool:
        return (await relay_lag(pg_store, s.relay_name)).events == 0

    await wait_for(drained, what="relay-b relaying")
    assert await _held_by(pg_store, s, "relay-b")
    b.send_signal(signal.SIGTERM)  # relay-a, awake, is the standby now
    await b.wait()
    await wait_for(lambda: _held_by(pg_store, s, "relay-a"), what="relay-a active again")
    # the session timed out (2 s after relay-a's last heartbeat, at most 0.5 s before
    # the pause), not sooner: the lock is never taken from a relay that is still talking
    assert 2.0 - 0.5 <= took_over_s <= 2.0 + TAKEOVER_BOUND_S, took_over_s
