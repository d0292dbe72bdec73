"""Benchmark: sagaflow's order saga against a bare four-activity Temporal workflow.

    python -m bench.saga [--quick]

Starts its own PostgreSQL and Temporal dev server (temporary data folder, no Kafka),
then, in one run, side by side and three times each:

* baseline: ``BareFourActivities`` (four no-op activities), default worker settings,
  started with ``execute_workflow``;
* saga: the order saga with event sourcing, from start to confirmation (the
  ``outcome`` update returns when the order awaits shipment).

Sequential p50/p99 latency, and throughput with 50 workflows in flight. Prints the
median and spread (max - min) of the three repeats, the ratios, and as its last
line ``RESULT {json}``.

Levers used for the saga (see the report): event-store steps as *local* activities
(no task-queue round trip per step; their results are markers in the same workflow
task), eager workflow start (the first workflow task comes back with the start
response), and worker concurrency from settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from application.catalogue import register_product, restock
from application.orders import start_order
from bench.baseline_workflow import BareFourActivities, noop
from domain.commands import OrderLine, PlaceOrder, RegisterProduct, Restock
from eventstore.postgres import PostgresEventStore
from sagaflow.services import LocalServices
from sagaflow.settings import Settings, load_settings
from worker import build_worker
from workflows.client import await_outcome

SKUS = [f"BENCH-{n}" for n in range(20)]
IN_FLIGHT = 50


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def sequential(run_one: Callable[[], Awaitable[Any]], count: int) -> tuple[float, float]:
    """p50 and p99 latency in ms of ``count`` runs one after another."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await run_one()
        latencies.append((time.perf_counter() - started) * 1000)
    return percentile(latencies, 50), percentile(latencies, 99)


async def throughput(run_one: Callable[[], Awaitable[Any]], count: int) -> float:
    """Workflows per second with ``IN_FLIGHT`` running at once."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def gated() -> None:
        async with gate:
            await run_one()

    started = time.perf_counter()
    await asyncio.gather(*(gated() for _ in range(count)))
    return count / (time.perf_counter() - started)


async def measure(
    name: str, run_one: Callable[[], Awaitable[Any]], seq_n: int, tp_n: int
) -> dict[str, float]:
    """One repeat: sequential latencies then throughput."""
    p50, p99 = await sequential(run_one, seq_n)
    rate = await throughput(run_one, tp_n)
    print(f"  {name:8s} seq p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  throughput {rate:6.1f}/s")
    return {"seq_p50_ms": p50, "seq_p99_ms": p99, "throughput_50": rate}


async def bench(settings: Settings, quick: bool) -> dict[str, float]:
    """Run both workloads three times, interleaved; return the flat result."""
    assert settings.temporal_address and settings.database_url
    client = await Client.connect(settings.temporal_address)
    store = await PostgresEventStore.connect(settings.database_url, max_size=settings.db_pool_size)
    for sku in SKUS:
        await register_product(store, RegisterProduct(sku=sku, name=sku, unit_price_cents=199))
        await restock(store, Restock(sku=sku, quantity=1_000_000))
    seq_n, tp_n = (20, 100) if quick else (60, 300)
    base_queue, saga_queue = f"bench-base-{uuid.uuid4().hex[:6]}", settings.task_queue
    counter = iter(range(10**9))
    eager = [0, 0]  # eagerly started, started

    async def run_baseline() -> None:
        n = next(counter)
        await client.execute_workflow(
            BareFourActivities.run, n, id=f"bare-{n}-{uuid.uuid4().hex[:6]}", task_queue=base_queue
        )

    async def run_saga() -> None:
        n = next(counter)
        order_id = f"bench-{n}-{uuid.uuid4().hex[:6]}"
        cmd = PlaceOrder(
            order_id=order_id,
            customer_id="bench",
            lines=[OrderLine(sku=SKUS[n % len(SKUS)], quantity=1)],
        )
        handle = await start_order(client, settings, cmd, store=store)
        # Why count: eager start is silently skipped when no local worker slot is free.
        eager[0] += int(bool(getattr(handle, "__temporal_eagerly_started", False)))
        eager[1] += 1
        outcome = await await_outcome(client, order_id)
        assert outcome == "awaiting_shipment", outcome

    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "saga": []}
    # The baseline keeps every default worker setting, as the issue asks.
    baseline_worker = Worker(
        client, task_queue=base_queue, workflows=[BareFourActivities], activities=[noop]
    )
    saga_worker = build_worker(client, settings, store, task_queue=saga_queue)
    async with baseline_worker, saga_worker:
        await sequential(run_baseline, 5)  # warm-up: sandbox imports, connections
        await sequential(run_saga, 5)
        for repeat in range(3):
            print(f"repeat {repeat + 1}/3")
            runs["baseline"].append(await measure("baseline", run_baseline, seq_n, tp_n))
            runs["saga"].append(await measure("saga", run_saga, seq_n, tp_n))
    await store.close()

    result: dict[str, float] = {}
    for name, repeats in runs.items():
        for key in ("seq_p50_ms", "seq_p99_ms", "throughput_50"):
            values = [r[key] for r in repeats]
            result[f"{name}.{key}"] = round(statistics.median(values), 2)
            result[f"{name}.{key}_spread"] = round(max(values) - min(values), 2)
    result["ratio.throughput_saga_over_baseline"] = round(
        result["saga.throughput_50"] / result["baseline.throughput_50"], 3
    )
    result["ratio.seq_p50_saga_over_baseline"] = round(
        result["saga.seq_p50_ms"] / result["baseline.seq_p50_ms"], 3
    )
    result["saga.eager_start_fraction"] = round(eager[0] / max(eager[1], 1), 3)
    result["sequential_runs"] = seq_n
    result["throughput_runs"] = tp_n
    return result


def main() -> None:
    """Entry point: start services, benchmark, print the summary and RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer workflows per repeat")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sagaflow-bench-") as tmp:
        base = load_settings(data_dir=Path(tmp), kafka_enabled=False)
        services = LocalServices(base)
        with services.running_services():
            settings = load_settings(
                data_dir=Path(tmp),
                kafka_enabled=False,
                database_url=services.running["postgres"].addresses["url"],
                temporal_address=services.running["temporal"].addresses["address"],
                db_pool_size=20,
            )
            result = asyncio.run(bench(settings, args.quick))
    b, s = "baseline", "saga"
    print(
        f"median of 3: baseline p50 {result[b + '.seq_p50_ms']} ms, "
        f"{result[b + '.throughput_50']}/s; saga p50 {result[s + '.seq_p50_ms']} ms, "
        f"{result[s + '.throughput_50']}/s; throughput ratio "
        f"{result['ratio.throughput_saga_over_baseline']}x, p50 ratio "
        f"{result['ratio.seq_p50_saga_over_baseline']}x"
    )
    print("RESULT " + json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
