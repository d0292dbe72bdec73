"""Streaming benchmark per transport: relay vs a bare publisher, projector vs a bare
consumer, lag.

Run ``python -m bench.streaming [--quick] [--transports kafka,rabbitmq,embedded]``.
Starts its own PostgreSQL, Kafka and RabbitMQ (LocalServices on a temporary data
folder), writes a synthetic order workload, and measures for each transport, each
3 times (median and spread reported):

* ``publisher`` - the limit: a bare aiokafka idempotent producer (Kafka) or a bare
  aio-pika publisher with confirms in the relay's windows (RabbitMQ), sending the
  relay's exact messages (the envelopes as the store renders them, the same headers);
  on RabbitMQ to an exchange of its own with the same topology as the relay's (topic
  exchange, consistent-hash exchange, the shard quorum queues of one group), so the
  broker routes and stores each message once for either;
* ``relay``     - the relay from the store's feed to confirmed by the broker, with its
  checkpoint (measured from its first confirmed batch to the last);
* ``consumer``  - the limit: a bare group member that only reads (Kafka), a bare
  consumer of the bare publisher's shard queues acking every 100 (RabbitMQ), or
  reading the store's feed (embedded);
* ``writer``    - the limit for a projector that writes (Kafka, embedded): the bare
  reader, each batch applied by the projector's own three read-model handlers with
  the reader's positions in one transaction, and nothing else (no watermarks, gap
  check, holds or dead letters). ``projector / writer`` is the cost of exactly-once;
  ``projector / consumer`` mostly the cost of PostgreSQL;
* ``projector`` - the projector applying order_summary + analytics with the
  one-transaction checkpoint (from its first committed batch to the last);
* ``lag``       - append → visible in order_summary at a steady 500 events/s.

Beside each rate: the benchmark process's CPU milliseconds per 1,000 events (user +
system, from ``os.times``; steadier than wall time on a shared machine; the relay's
and projector's figures include the client libraries, not the brokers or PostgreSQL)
and the 1-minute load average when the repeat ended.

The last line is ``RESULT {json}``. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from psycopg_pool import AsyncConnectionPool

from bench.workload import register_products, run_orders
from domain import events as ev
from eventstore.envelope import NO_STREAM, START, EncodedEvent, NewEvent, RecordedEvent
from eventstore.postgres import PostgresEventStore
from eventstore.upcasting import Upcasters
from projections.handlers import (
    DailySalesProjection,
    OrderSummaryProjection,
    ProductSalesProjection,
    Projection,
    default_projections,
)
from projections.runner import build_projector, open_pool
from sagaflow.clients import connect_rabbitmq, kafka_client_options
from sagaflow.services import LocalServices
from sagaflow.settings import Settings, Transport, load_settings
from streaming.kafka import encode_record, ensure_topic, idempotent_producer, quiet_kafka_logs
from streaming.rabbitmq import (
    declare_events_exchange,
    declare_group,
    encode_message,
    routing_key,
    shard_queue,
)
from streaming.relay import Relay, load_checkpoint, save_checkpoint
from streaming.transport import Batch, make_subscriber

SKUS = [f"sku-{i}" for i in range(20)]
LAG_RATE = 500


def cpu_s() -> float:
    """User + system CPU seconds of this process so far."""
    t = os.times()
    return t.user + t.system


#: CPU ms per 1,000 events of the last relay / projector measurement, by measure
CPU_MS: dict[str, float] = {}


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and relative spread ((max - min) / median)."""
    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / med if med else 0.0,
    }


async def wait_until(check: Callable[[], Awaitable[bool]], timeout_s: float = 300) -> None:
    """Poll ``check`` every 10 ms."""
    deadline = time.perf_counter() + timeout_s
    while not await check():
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark step did not finish")
        await asyncio.sleep(0.01)


async def bench_producer(settings: Settings, payloads: list[Any]) -> float:
    """Bare idempotent producer: every payload sent and acknowledged."""
    topic = f"bench-bare-{uuid.uuid4().hex[:8]}"
    await ensure_topic(settings, topic)
    producer = idempotent_producer(settings)
    await producer.start()
    try:
        start = time.perf_counter()
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for key, value, headers in payloads
        ]
        await asyncio.gather(*futures)
        return len(payloads) / (time.perf_counter() - start)
    finally:
        await producer.stop()


async def bench_rabbit_publisher(settings: Settings, feed: list[EncodedEvent]) -> float:
    """Bare aio-pika publisher with confirms: the relay's messages, confirmed in windows,
    to ``settings.rabbitmq_exchange`` (whose group topology the caller declared)."""
    connection = await connect_rabbitmq(settings)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_events_exchange(channel, settings)
        messages = [(encode_message(e), routing_key(e.stream_type, e.event_type)) for e in feed]
        window = settings.rabbitmq_confirm_window
        start = time.perf_counter()
        for i in range(0, len(messages), window):
            await asyncio.gather(
                *(exchange.publish(m, routing_key=k) for m, k in messages[i : i + window])
            )
        return len(messages) / (time.perf_counter() - start)
    finally:
        await connection.close()


async def bench_relay(store: PostgresEventStore, settings: Settings, total: int) -> float:
    """The relay from the feed's start to the last checkpoint; returns events/s."""
    relay = Relay(store, settings)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    first: tuple[float, int] | None = None
    try:

        async def done() -> bool:
            nonlocal first
            if task.done():
                task.result()
            if first is None and relay.published:
                first = (time.perf_counter(), relay.published)
            return relay.published >= total

        cpu0 = cpu_s()
        await wait_until(done)
        end = time.perf_counter()
        CPU_MS["relay"] = (cpu_s() - cpu0) * 1e6 / total
    finally:
        stop.set()
        await task
    assert first is not None
    assert (await load_checkpoint(store.pool, settings.relay_name)).position > 0
    return (total - first[1]) / max(end - first[0], 1e-9)


async def bench_consumer(settings: Settings, total: int) -> float:
    """A bare group member that reads every message of the topic and does nothing."""
    consumer = AIOKafkaConsumer(
        settings.kafka_topic,
        **kafka_client_options(settings),
        group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.projector_batch_size,
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen = 0
        first: tuple[float, int] | None = None
        while seen < total:
            batches = await consumer.getmany(timeout_ms=100, max_records=2000)
            seen += sum(len(b) for b in batches.values())
            if first is None and seen:
                first = (time.perf_counter(), seen)
        assert first is not None
        return (total - first[1]) / max(time.perf_counter() - first[0], 1e-9)
    finally:
        await consumer.stop()


async def bench_rabbit_consumer(settings: Settings, group: str, total: int) -> float:
    """A bare consumer of a group's shard queues: one channel each, an ack every 100."""
    connection = await connect_rabbitmq(settings)
    seen = 0
    first: tuple[float, int] | None = None
    done = asyncio.Event()
    try:
        for shard in range(settings.rabbitmq_shards):
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=settings.rabbitmq_prefetch)
            queue = await channel.get_queue(shard_queue(settings, group, shard), ensure=False)
            count = 0

            async def on_message(message: Any) -> None:
                nonlocal seen, first, count
                seen += 1
                count += 1
                if first is None:
                    first = (time.perf_counter(), seen)
                if count % 100 == 0 or seen >= total:
                    await message.ack(multiple=True)
                if seen >= total:
                    done.set()

            await queue.consume(on_message)
        await asyncio.wait_for(done.wait(), 300)
        assert first is not None
        return (total - first[1]) / max(time.perf_counter() - first[0], 1e-9)
    finally:
        await connection.close()


async def bench_feed_reader(store: PostgresEventStore, settings: Settings, total: int) -> float:
    """The embedded transport's limit: reading the store's feed in projector batches."""
    start = time.perf_counter()
    cursor, seen = START, 0
    while batch := await store.read_feed(cursor, settings.projector_batch_size):
        cursor, seen = batch[-1].cursor, seen + len(batch)
    assert seen >= total
    return seen / (time.perf_counter() - start)


BARE_POSITIONS = "bench_bare_positions"


async def _bare_write(
    pool: AsyncConnectionPool,
    upcasters: Upcasters,
    projections: list[Projection],
    events: list[RecordedEvent],
    positions: dict[str, int],
) -> None:
    """One batch, the way a hand-written consumer would: decode, apply the read models'
    handlers, save the reader's positions, commit. Nothing else: no watermarks (a
    redelivery would count twice), no gap check, no holds, no dead letters."""
    followed = {t for p in projections for t in p.stream_types}
    pairs = [(r, upcasters.decode(r)) for r in events if r.stream_type in followed]
    async with pool.connection() as conn, conn.pipeline(), conn.transaction():
        for projection in projections:
            mine = [pair for pair in pairs if pair[0].stream_type in projection.stream_types]
            if mine:
                await projection.apply(conn, {}, mine)
        await conn.execute(
            f"INSERT INTO {BARE_POSITIONS} (part, position) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[]) "
            "ON CONFLICT (part) DO UPDATE SET position = EXCLUDED.position",
            (list(positions), list(positions.values())),
        )


async def bench_bare_writer(store: PostgresEventStore, settings: Settings, total: int) -> float:
    """The limit for a projector that writes: the bare reader of the transport (a group
    member with manual offsets on Kafka, the feed in projector batches when embedded),
    each batch decoded and applied by the same three read models' handlers as the
    projector's, with the reader's positions, in one transaction. What the projector
    adds on top is its exactly-once machinery (watermarks, gap healing, holds and dead
    letters), so projector / bare writer is the cost of that machinery."""
    await reset_read_models(store)
    async with store.pool.connection() as conn:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {BARE_POSITIONS} "
            "(part text PRIMARY KEY, position bigint NOT NULL)"
        )
        await conn.execute(f"TRUNCATE {BARE_POSITIONS}")
    chosen: list[Projection] = [
        OrderSummaryProjection(),
        DailySalesProjection(),
        ProductSalesProjection(),
    ]
    upcasters = store.upcasters
    seen = 0
    first: tuple[float, int] | None = None
    batch_size = settings.projector_batch_size
    cpu0 = cpu_s()
    if settings.transport_kind is Transport.KAFKA:
        consumer = AIOKafkaConsumer(
            settings.kafka_topic,
            **kafka_client_options(settings),
            group_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=batch_size,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        try:
            while seen < total:
                polled = await consumer.getmany(timeout_ms=100, max_records=batch_size)
                records = [r for batch in polled.values() for r in batch]
                if not records:
                    continue
                events = [RecordedEvent.from_envelope(json.loads(r.value)) for r in records]
                positions = {f"{tp.partition}": b[-1].offset + 1 for tp, b in polled.items()}
                await _bare_write(store.pool, upcasters, chosen, events, positions)
                seen += len(records)
                if first is None:
                    first = (time.perf_counter(), seen)
        finally:
            await consumer.stop()
    else:
        cursor = START
        while batch := await store.read_feed(cursor, batch_size):
            await _bare_write(
                store.pool, upcasters, chosen, batch, {"feed": batch[-1].global_position}
            )
            cursor, seen = batch[-1].cursor, seen + len(batch)
            if first is None:
                first = (time.perf_counter(), seen)
    assert first is not None and seen >= total
    CPU_MS["writer"] = (cpu_s() - cpu0) * 1e6 / seen
    return (seen - first[1]) / max(time.perf_counter() - first[0], 1e-9)


async def reset_read_models(store: PostgresEventStore) -> None:
    """Empty every read model and position (a fresh projector for the next repeat)."""
    tables = [t for p in default_projections() for t in p.tables]
    async with store.pool.connection() as conn:
        await conn.execute(
            "TRUNCATE projection_watermarks, projection_offsets, dead_letters, "
            "parked_messages, " + ", ".join(tables)
        )


async def bench_projector(
    store: PostgresEventStore, settings: Settings, total: int, group: str
) -> float:
    """The projector on order_summary + analytics, from its first commit to the last."""
    await reset_read_models(store)
    s = settings.model_copy(update={"projector_group": group})
    chosen = [OrderSummaryProjection(), DailySalesProjection(), ProductSalesProjection()]
    assert s.database_url
    pool = await open_pool(s.database_url, migrate=False)
    subscriber = make_subscriber(s, pool, store)
    projector = build_projector(s, pool, store, chosen, subscriber)
    consumed = 0
    first: tuple[float, int] | None = None
    stop = asyncio.Event()
    end = 0.0

    async def deliver(batch: Batch) -> None:
        nonlocal consumed, first, end
        await projector.process(batch.messages, batch.checkpoint)
        if batch.settle is not None:
            await batch.settle()
        consumed += len(batch.messages)
        if first is None:
            first = (time.perf_counter(), consumed)
        if consumed >= total:
            end = time.perf_counter()
            stop.set()

    cpu0 = cpu_s()
    try:
        await asyncio.wait_for(subscriber.run(deliver, stop), 600)
        CPU_MS["projector"] = (cpu_s() - cpu0) * 1e6 / total
    finally:
        await pool.close()
    assert first is not None
    return (total - first[1]) / max(end - first[0], 1e-9)


async def bench_lag(store: PostgresEventStore, settings: Settings, seconds: float) -> list[float]:
    """Append one event every 2 ms (500/s) and time each until order_summary shows it."""
    await reset_read_models(store)
    s = settings.model_copy(
        update={
            "projector_group": f"lag-{uuid.uuid4().hex[:8]}",
            "relay_name": f"lag-{uuid.uuid4().hex[:8]}",
            "kafka_topic": f"lag-{uuid.uuid4().hex[:8]}",
            "rabbitmq_exchange": f"lag-{uuid.uuid4().hex[:8]}",
            "relay_linger_ms": 2,
            "relay_poll_interval_s": 0.005,
            "projector_poll_interval_s": 0.005,
        }
    )
    # Why start the relay at the head: it must not replay the benchmark's backlog.
    head = await store.read_feed(limit=1_000_000)
    await save_checkpoint(store.pool, s.relay_name, head[-1].cursor)
    async with store.pool.connection() as conn:
        # the embedded projector starts at the head too
        await conn.execute(
            "INSERT INTO projection_feed_checkpoints (consumer, epoch, tx_id, position) "
            "VALUES (%s, %s, %s, %s)",
            (s.projector_group, head[-1].cursor.epoch, head[-1].cursor.tx_id,
             head[-1].cursor.position),
        )  # fmt: skip
        # Why: the read models count as current, so the projector does not bootstrap
        # them from the store (which would be measured as lag)
        for projection in default_projections():
            await conn.execute(
                "INSERT INTO projection_bootstraps (projection) VALUES (%s) ON CONFLICT DO NOTHING",
                (projection.name,),
            )
            await conn.execute(
                "INSERT INTO projection_watermarks VALUES (%s, '$bench', 0) ON CONFLICT DO NOTHING",
                (projection.name,),
            )
    if s.transport_kind is Transport.KAFKA:
        await ensure_topic(s, s.kafka_topic)
    # Why subprocesses: as deployed, relay and projector each get their own core; in
    # this process they would share one event loop with the writer and the watcher.
    env = {
        **{k: v for k, v in os.environ.items() if k != "SAGAFLOW_KAFKA_ENABLED"},
        "SAGAFLOW_DATABASE_URL": str(s.database_url),
        "SAGAFLOW_TRANSPORT": s.transport_kind.value,
        "SAGAFLOW_RABBITMQ_EXCHANGE": s.rabbitmq_exchange,
        "SAGAFLOW_RABBITMQ_SHARDS": str(s.rabbitmq_shards),
        "SAGAFLOW_KAFKA_TOPIC": s.kafka_topic,
        "SAGAFLOW_RELAY_NAME": s.relay_name,
        "SAGAFLOW_PROJECTOR_GROUP": s.projector_group,
        "SAGAFLOW_RELAY_LINGER_MS": "2",
        "SAGAFLOW_RELAY_POLL_INTERVAL_S": "0.005",
        "SAGAFLOW_PROJECTOR_POLL_INTERVAL_S": "0.01",
    }
    # only the brokers this run started ("None" would be refused by the settings)
    if s.kafka_bootstrap:
        env["SAGAFLOW_KAFKA_BOOTSTRAP"] = str(s.kafka_bootstrap)
    if s.rabbitmq_url:
        env["SAGAFLOW_RABBITMQ_URL"] = str(s.rabbitmq_url)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            command,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for module, command in (("streaming", "relay"), ("projections", "projector"))
        if module == "projections" or s.transport_kind is not Transport.EMBEDDED
    ]
    appended: dict[str, float] = {}
    visible: dict[str, float] = {}
    await asyncio.sleep(5.0)  # start-up and group join, outside the measurement

    async def writer() -> None:
        tick, per_tick = 0.01, int(LAG_RATE * 0.01)
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:

            async def one(order_id: str) -> None:
                await store.append(
                    ev.order_stream(order_id),
                    [NewEvent(ev.OrderCreated(order_id=order_id, customer_id="lag"))],
                    NO_STREAM,
                    stream_type="Order",
                )
                appended[order_id] = time.perf_counter()

            await asyncio.gather(*(one(f"lag-{s.relay_name}-{n + i}") for i in range(per_tick)))
            n += per_tick
            next_tick = start + (n / per_tick) * tick
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))

    async def watcher() -> None:
        while True:
            pending = [o for o in appended if o not in visible]
            if pending:
                async with store.pool.connection() as conn:
                    cur = await conn.execute(
                        "SELECT order_id FROM order_summary WHERE order_id = ANY(%s)", (pending,)
                    )
                    now = time.perf_counter()
                    for (order_id,) in await cur.fetchall():
                        visible[order_id] = now
            await asyncio.sleep(0.005)

    watch = asyncio.create_task(watcher())
    await writer()
    await wait_until(lambda: _all_visible(appended, visible), timeout_s=60)
    watch.cancel()
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    return [(visible[o] - appended[o]) * 1000 for o in appended]


async def _all_visible(appended: dict[str, float], visible: dict[str, float]) -> bool:
    return len(visible) >= len(appended)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(quick: bool, transports: list[str]) -> dict[str, Any]:
    """Start services, run every measurement ``repeats`` times, print and return results."""
    quiet_kafka_logs()
    logging.getLogger("sagaflow").setLevel(logging.ERROR)
    target_events = 5_000 if quick else 20_000
    repeats = 3
    lag_seconds = 4.0 if quick else 10.0
    names = ["postgres"] + [t for t in transports if t in ("kafka", "rabbitmq")]
    with tempfile.TemporaryDirectory(prefix="sagaflow-bench-") as tmp:
        base = load_settings(data_dir=Path(tmp), transport="embedded")
        services = LocalServices(base)
        with services.running_services(names):
            running = services.running
            settings = base.model_copy(
                update={
                    "database_url": running["postgres"].addresses["url"],
                    "kafka_bootstrap": running["kafka"].addresses["bootstrap"]
                    if "kafka" in running
                    else None,
                    "rabbitmq_url": running["rabbitmq"].addresses["url"]
                    if "rabbitmq" in running
                    else None,
                    "kafka_partitions": 6,
                    "rabbitmq_shards": 6,
                }
            )
            assert settings.database_url
            store = await PostgresEventStore.connect(settings.database_url, max_size=20)
            try:
                print(f"writing the workload (~{target_events} events)...", flush=True)
                await register_products(store, SKUS)
                await run_orders(
                    store, target_events // 14, prefix="bench-", skus=SKUS, concurrency=16
                )
                result: dict[str, Any] = {}
                for transport in transports:
                    print(f"\n== {transport}", flush=True)
                    measured = await _measure(
                        store, settings.with_transport(transport), repeats, lag_seconds
                    )
                    result.update({f"{transport}.{k}": v for k, v in measured.items()})
                return result
            finally:
                await store.close()


async def _measure(
    store: PostgresEventStore, settings: Settings, repeats: int, lag_seconds: float
) -> dict[str, Any]:
    feed = await store.read_feed_encoded(limit=1_000_000)
    total = len(feed)
    kind = settings.transport_kind
    print(f"{total} events in the store", flush=True)
    payloads = [encode_record(e) for e in feed] if kind is Transport.KAFKA else []
    runs: dict[str, list[float]] = {
        "publisher": [],
        "relay": [],
        "consumer": [],
        "writer": [],
        "projector": [],
    }
    cpu: dict[str, list[float]] = {"relay": [], "writer": [], "projector": []}
    loads: list[float] = []
    if kind is Transport.EMBEDDED:
        del runs["publisher"], runs["relay"]
    if kind is Transport.RABBITMQ:
        # Its bare consumer, not PostgreSQL, is already the limit (the projector keeps
        # up with it), so a bare writer would measure aio-pika again.
        del runs["writer"]
    for i in range(repeats):
        tag = uuid.uuid4().hex[:8]
        s = settings.model_copy(
            update={
                "kafka_topic": f"bench-{tag}",
                "rabbitmq_exchange": f"bench-{tag}",
                "relay_name": f"bench-{tag}",
                "projector_group": f"bench-{tag}",
            }
        )
        group, bare = f"bench-{tag}", f"bench-bare-{tag}"
        if kind is Transport.KAFKA:
            runs["publisher"].append(await bench_producer(s, payloads))
            runs["relay"].append(await bench_relay(store, s, total))
            runs["consumer"].append(await bench_consumer(s, total))
            runs["writer"].append(await bench_bare_writer(store, s, total))
        elif kind is Transport.RABBITMQ:
            # the bare publisher fills a group of its own on an exchange of its own (the
            # relay declares the projector group's itself); the bare consumer reads it
            bare_s = s.model_copy(update={"rabbitmq_exchange": bare})
            connection = await connect_rabbitmq(bare_s)
            await declare_group(await connection.channel(), bare_s, bare)
            await connection.close()
            runs["publisher"].append(await bench_rabbit_publisher(bare_s, feed))
            runs["relay"].append(await bench_relay(store, s, total))
            runs["consumer"].append(await bench_rabbit_consumer(bare_s, bare, total))
        else:
            runs["consumer"].append(await bench_feed_reader(store, s, total))
            runs["writer"].append(await bench_bare_writer(store, s, total))
        runs["projector"].append(await bench_projector(store, s, total, group))
        for name in cpu:
            if name in runs:
                cpu[name].append(CPU_MS[name])
        loads.append(os.getloadavg()[0])
        print(
            f"repeat {i + 1}: "
            + ", ".join(f"{k} {v[-1]:,.0f} ev/s" for k, v in runs.items())
            + "; CPU ms/1k: "
            + ", ".join(f"{k} {v[-1]:.0f}" for k, v in cpu.items() if v)
            + f"; load {loads[-1]:.2f}",
            flush=True,
        )
    p50s, p99s = [], []
    for i in range(repeats):
        sample = await bench_lag(store, settings, lag_seconds)
        p50s.append(percentile(sample, 0.50))
        p99s.append(percentile(sample, 0.99))
        print(
            f"lag repeat {i + 1}: {len(sample)} events at {LAG_RATE}/s, "
            f"p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms; load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    stats = {k: spread(v) for k, v in runs.items()}
    print()
    print(f"{'measure':<12}{'median ev/s':>14}{'min':>12}{'max':>12}{'spread':>9}")
    for name, st in stats.items():
        print(
            f"{name:<12}{st['median']:>14,.0f}{st['min']:>12,.0f}{st['max']:>12,.0f}"
            f"{st['spread']:>8.0%}"
        )
    out: dict[str, Any] = {}
    for name, st in stats.items():
        out[f"{name}.events_per_s"] = round(st["median"])
        out[f"{name}.spread"] = round(st["spread"], 3)
    for name, values in cpu.items():
        if values:
            out[f"{name}.cpu_ms_per_1k"] = round(statistics.median(values), 1)
            print(f"{name} CPU ms per 1,000 events: median {statistics.median(values):.0f} "
                  f"({min(values):.0f}-{max(values):.0f})")  # fmt: skip
    out["load_avg_1m"] = round(statistics.median(loads), 2)
    if "relay" in stats:
        ratio = stats["relay"]["median"] / stats["publisher"]["median"]
        out["relay.ratio_to_publisher"] = round(ratio, 3)
        print(f"relay / bare publisher    = {ratio:.2f}  (target >= 0.8)")
    ratio = stats["projector"]["median"] / stats["consumer"]["median"]
    out["projector.ratio_to_consumer"] = round(ratio, 3)
    print(
        f"projector / bare consumer = {ratio:.2f}  (targets >= 0.6 and >= 10,000 ev/s; "
        f"projector {stats['projector']['median']:,.0f})"
    )
    if "writer" in stats:
        ratio = stats["projector"]["median"] / stats["writer"]["median"]
        out["projector.ratio_to_writer"] = round(ratio, 3)
        print(
            f"projector / bare writer   = {ratio:.2f}  (the same read-model writes without "
            "the exactly-once machinery)"
        )
    p50, p99 = statistics.median(p50s), statistics.median(p99s)
    print(f"lag at {LAG_RATE} ev/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms (target p99 < 100 ms)")
    out.update({"lag.p50_ms": round(p50, 1), "lag.p99_ms": round(p99, 1)})
    out.update({"lag.p99_spread_ms": round(max(p99s) - min(p99s), 1), "events": total})
    return out


def cli() -> None:
    """Parse arguments, run, print the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller workload, shorter lag run")
    parser.add_argument(
        "--transports", default="kafka,rabbitmq,embedded", help="comma-separated, in order"
    )
    args = parser.parse_args()
    result = asyncio.run(main(args.quick, [t.strip() for t in args.transports.split(",")]))
    print("RESULT " + json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    cli()
