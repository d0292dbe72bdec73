"""Streaming benchmark: relay vs a bare producer, projector vs a bare consumer, lag.

Run ``python -m bench.streaming [--quick]``. Starts its own PostgreSQL and Kafka
(LocalServices on a temporary data folder), writes a synthetic order workload, and
measures, each at least 3 times (median and spread reported):

* ``producer``  - a bare aiokafka idempotent producer sending the relay's exact
  payloads (key, envelope, headers) and awaiting every acknowledgement: the limit;
* ``relay``     - the relay from the store's feed to acknowledged in Kafka, with its
  checkpoint (measured from its first acknowledged batch to the last);
* ``consumer``  - a bare consumer group member that only reads: the limit;
* ``projector`` - the projector applying order_summary + analytics with the
  one-transaction checkpoint (from its first committed batch to the last);
* ``lag``       - append → visible in order_summary at a steady 500 events/s.

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

from bench.workload import register_products, run_orders
from domain import events as ev
from eventstore.envelope import NO_STREAM, NewEvent
from eventstore.postgres import PostgresEventStore
from projections.handlers import (
    DailySalesProjection,
    OrderSummaryProjection,
    ProductSalesProjection,
    default_projections,
)
from projections.runner import run_projector
from sagaflow.services import LocalServices
from sagaflow.settings import Settings, load_settings
from streaming.kafka import encode_record, ensure_topic, idempotent_producer, quiet_kafka_logs
from streaming.relay import Relay, load_checkpoint, save_checkpoint

SKUS = [f"sku-{i}" for i in range(20)]
LAG_RATE = 500


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

        await wait_until(done)
        end = time.perf_counter()
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
        bootstrap_servers=settings.kafka_bootstrap,
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


async def reset_read_models(store: PostgresEventStore) -> None:
    """Empty every read model and position (a fresh projector for the next repeat)."""
    tables = [t for p in default_projections() for t in p.tables]
    async with store.pool.connection() as conn:
        await conn.execute(
            "TRUNCATE projection_watermarks, projection_offsets, dead_letters, "
            "parked_messages, " + ", ".join(tables)
        )


async def offsets_applied(store: PostgresEventStore, group: str) -> int:
    """Sum of the projector's stored next offsets."""
    async with store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM projection_offsets WHERE consumer = %s",
            (group,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def bench_projector(store: PostgresEventStore, settings: Settings, total: int) -> float:
    """The projector on order_summary + analytics, from its first commit to the last."""
    await reset_read_models(store)
    s = settings.model_copy(update={"projector_group": f"bench-{uuid.uuid4().hex[:8]}"})
    chosen = [OrderSummaryProjection(), DailySalesProjection(), ProductSalesProjection()]
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(s, stop, projections=chosen))
    first: tuple[float, int] | None = None
    try:

        async def done() -> bool:
            nonlocal first
            if task.done():
                task.result()
            applied = await offsets_applied(store, s.projector_group)
            if first is None and applied:
                first = (time.perf_counter(), applied)
            return applied >= total

        await wait_until(done)
        end = time.perf_counter()
    finally:
        stop.set()
        await task
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
            "relay_linger_ms": 2,
            "relay_poll_interval_s": 0.005,
            "projector_poll_interval_s": 0.005,
        }
    )
    # Why start the relay at the head: it must not replay the benchmark's backlog.
    head = await store.read_feed(limit=1_000_000)
    await save_checkpoint(store.pool, s.relay_name, head[-1].cursor)
    await ensure_topic(s, s.kafka_topic)
    # Why subprocesses: as deployed, relay and projector each get their own core; in
    # this process they would share one event loop with the writer and the watcher.
    env = {
        **os.environ,
        "SAGAFLOW_DATABASE_URL": str(s.database_url),
        "SAGAFLOW_KAFKA_BOOTSTRAP": str(s.kafka_bootstrap),
        "SAGAFLOW_KAFKA_ENABLED": "true",
        "SAGAFLOW_KAFKA_TOPIC": s.kafka_topic,
        "SAGAFLOW_RELAY_NAME": s.relay_name,
        "SAGAFLOW_PROJECTOR_GROUP": s.projector_group,
        "SAGAFLOW_RELAY_LINGER_MS": "2",
        "SAGAFLOW_RELAY_POLL_INTERVAL_S": "0.005",
        "SAGAFLOW_PROJECTOR_POLL_INTERVAL_S": "0.01",
    }
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


async def main(quick: bool) -> dict[str, Any]:
    """Start services, run every measurement ``repeats`` times, print and return results."""
    quiet_kafka_logs()
    logging.getLogger("sagaflow").setLevel(logging.ERROR)
    target_events = 5_000 if quick else 20_000
    repeats = 3
    lag_seconds = 4.0 if quick else 10.0
    with tempfile.TemporaryDirectory(prefix="sagaflow-bench-") as tmp:
        base = load_settings(data_dir=Path(tmp), kafka_enabled=True)
        services = LocalServices(base)
        with services.running_services(["postgres", "kafka"]):
            settings = base.model_copy(
                update={
                    "database_url": services.running["postgres"].addresses["url"],
                    "kafka_bootstrap": services.running["kafka"].addresses["bootstrap"],
                    "kafka_partitions": 6,
                }
            )
            assert settings.database_url
            store = await PostgresEventStore.connect(settings.database_url, max_size=20)
            try:
                return await _measure(store, settings, target_events, repeats, lag_seconds)
            finally:
                await store.close()


async def _measure(
    store: PostgresEventStore,
    settings: Settings,
    target_events: int,
    repeats: int,
    lag_seconds: float,
) -> dict[str, Any]:
    print(f"writing the workload (~{target_events} events)...", flush=True)
    await register_products(store, SKUS)
    await run_orders(store, target_events // 14, prefix="bench-", skus=SKUS, concurrency=16)
    feed = await store.read_feed(limit=1_000_000)
    total = len(feed)
    payloads = [encode_record(e) for e in feed]
    print(f"{total} events in the store", flush=True)

    runs: dict[str, list[float]] = {"producer": [], "relay": [], "consumer": [], "projector": []}
    for i in range(repeats):
        s = settings.model_copy(
            update={"kafka_topic": f"bench-{uuid.uuid4().hex[:8]}", "relay_name": f"bench-{i}"}
        )
        runs["producer"].append(await bench_producer(s, payloads))
        runs["relay"].append(await bench_relay(store, s, total))
        runs["consumer"].append(await bench_consumer(s, total))
        runs["projector"].append(await bench_projector(store, s, total))
        print(
            f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} ev/s" for k, v in runs.items()),
            flush=True,
        )
    lags: list[float] = []
    p50s, p99s = [], []
    for i in range(repeats):
        sample = await bench_lag(store, settings, lag_seconds)
        lags += sample
        p50s.append(percentile(sample, 0.50))
        p99s.append(percentile(sample, 0.99))
        print(
            f"lag repeat {i + 1}: {len(sample)} events at {LAG_RATE}/s, "
            f"p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms",
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
    relay_ratio = stats["relay"]["median"] / stats["producer"]["median"]
    projector_ratio = stats["projector"]["median"] / stats["consumer"]["median"]
    p50, p99 = statistics.median(p50s), statistics.median(p99s)
    print(f"relay / bare producer   = {relay_ratio:.2f}  (target >= 0.5)")
    print(f"projector / bare consumer = {projector_ratio:.2f}  (projector target >= 5,000 ev/s)")
    print(f"lag at {LAG_RATE} ev/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms (target p99 < 500 ms)")
    return {
        "producer.events_per_s": round(stats["producer"]["median"]),
        "relay.events_per_s": round(stats["relay"]["median"]),
        "consumer.events_per_s": round(stats["consumer"]["median"]),
        "projector.events_per_s": round(stats["projector"]["median"]),
        "lag.p50_ms": round(p50, 1),
        "lag.p99_ms": round(p99, 1),
        "relay.ratio_to_producer": round(relay_ratio, 3),
        "projector.ratio_to_consumer": round(projector_ratio, 3),
        "producer.spread": round(stats["producer"]["spread"], 3),
        "relay.spread": round(stats["relay"]["spread"], 3),
        "consumer.spread": round(stats["consumer"]["spread"], 3),
        "projector.spread": round(stats["projector"]["spread"], 3),
        "events": total,
        "repeats": repeats,
    }


def cli() -> None:
    """Parse arguments, run, print the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller workload, shorter lag run")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick))
    print("RESULT " + json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    cli()
