"""Event-store benchmark: sagaflow vs the `eventsourcing` library vs raw INSERTs.

    python -m bench.eventstore [--quick] [--repeats N]

One embedded PostgreSQL, one run, the same work for each system, each case repeated:
(a) sequential single-event appends to new streams, (b) sequential appends to
existing streams with an expected version, (c) 8 concurrent writers, (d) 100-event
batch appends (all in events/s), (e) loading an aggregate of 10,000 events with and
without a snapshot (ms), (f) a reserve on a SKU that holds 0 and then
OPEN_RESERVATIONS open reservations (load, decide, append, a snapshot every 20
events, the default): ms of wall time and of this process's CPU per reserve, beside
the same with a snapshot every 100 events, and with the design before migration 0011
(the snapshot carries every open reservation; every 100 events, its default). Prints
a table (median and spread) and, last, a line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

from domain.inventory import Inventory, Reservation
from eventstore import Repository
from eventstore.postgres import PostgresEventStore
from sagaflow.services import LocalServices
from sagaflow.settings import load_settings

WRITERS = 8
LOAD_EVENTS = 10_000
OPEN_RESERVATIONS = 5_000
"""Open reservations on one SKU in case (f): 10,000 orders awaiting shipment over the
demo's catalogue of 4 SKUs, two lines each."""
RESERVES = 300


def _sizes(quick: bool) -> dict[str, int]:
    return (
        {"a": 300, "b": 300, "c": 100, "d": 20}
        if quick
        else {"a": 2000, "b": 2000, "c": 400, "d": 100}
    )


def _uid() -> str:
    return uuid.uuid4().hex[:12]


# --------------------------------------------------------------------------- sagaflow


async def sagaflow_case(store: PostgresEventStore, case: str, n: int) -> float:
    repo: Repository[Inventory] = Repository(store, Inventory, snapshot_every=0)
    if case == "a":
        started = time.perf_counter()
        for _ in range(n):
            inv = Inventory(_uid())
            inv.register("x", 1)
            await repo.save(inv)
        return n / (time.perf_counter() - started)
    if case in ("b", "c", "d"):
        writers = WRITERS if case == "c" else 1
        per_append = 100 if case == "d" else 1
        aggregates = []
        for _ in range(writers):
            inv = Inventory(_uid())
            inv.register("x", 1)
            await repo.save(inv)
            aggregates.append(inv)

        async def write(inv: Inventory) -> None:
            for _ in range(n):
                for _ in range(per_append):
                    inv.add_stock(1)
                await repo.save(inv)

        started = time.perf_counter()
        await asyncio.gather(*(write(inv) for inv in aggregates))
        return writers * n * per_append / (time.perf_counter() - started)
    raise ValueError(case)


async def sagaflow_load(store: PostgresEventStore) -> tuple[float, float]:
    repo: Repository[Inventory] = Repository(store, Inventory, snapshot_every=LOAD_EVENTS)
    inv = Inventory(_uid())
    inv.register("x", 1)
    for _ in range(LOAD_EVENTS // 100):
        for _ in range(100):
            inv.add_stock(1)
        await repo.save(inv)
    assert await store.load_snapshot(inv.stream_id) is not None

    async def timed(use_snapshot: bool) -> float:
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            loaded = await repo.load(inv.id, use_snapshot=use_snapshot)
            samples.append((time.perf_counter() - started) * 1000)
            assert loaded.stocked == LOAD_EVENTS
        return statistics.median(samples)

    return await timed(True), await timed(False)


class WholeInventory(Inventory):
    """The Inventory before migration 0011, for case (f)'s baseline: its snapshot
    carries every open reservation, so a load parses and rebuilds all of them."""

    snapshot_schema = 101
    entity_fields = ()

    def snapshot_state(self) -> dict[str, Any]:
        reservations = {rid: [r.order_id, r.quantity] for rid, r in self._reservations.items()}
        return super().snapshot_state() | {"reservations": reservations}

    def _restore(self, state: dict[str, Any]) -> None:
        super()._restore(state)
        self._reservations = {
            rid: Reservation(order_id, quantity)
            for rid, (order_id, quantity) in state["reservations"].items()
        }


async def sagaflow_reserve(
    store: PostgresEventStore, cls: type[Inventory], open_: int, every: int
) -> tuple[float, float]:
    """(f): ms per reserve on a SKU with ``open_`` open reservations, a snapshot every
    ``every`` events: wall (sequential, PostgreSQL's work included) and this process's
    CPU."""
    repo: Repository[Inventory] = Repository(store, cls, snapshot_every=every)
    sku = _uid()
    inv = cls(sku)
    inv.register("x", 1)
    inv.add_stock(open_ + RESERVES)
    await repo.save(inv)
    for start in range(0, open_, 100):
        for i in range(start, min(start + 100, open_)):
            inv.reserve(f"open-{i:05}-{uuid.uuid4().hex}", f"order-{i}", 1)
        await repo.save(inv)
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(RESERVES):
        rid = f"new-{i}-{uuid.uuid4().hex}"
        fresh = await repo.load(sku, entity=("reservation_id", rid))
        assert fresh.reservation(rid) is None
        fresh.reserve(rid, f"o-{i}", 1)
        await repo.save(fresh)
    return (
        (time.perf_counter() - started) * 1000 / RESERVES,
        (time.process_time() - cpu) * 1000 / RESERVES,
    )


#: (f)'s variants: (label, aggregate, snapshot interval). The last is the design and
#: the default interval before migration 0011.
RESERVE_VARIANTS: tuple[tuple[str, type[Inventory], int], ...] = (
    ("sagaflow", Inventory, 20),
    ("sagaflow_every_100", Inventory, 100),
    ("whole_snapshot", WholeInventory, 100),
)


# ---------------------------------------------------------------------- eventsourcing


def _es_app(url_parts: dict[str, str]) -> Any:
    from eventsourcing.application import Application

    class BenchApp(Application):
        pass

    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url_parts["db"],
        "POSTGRES_HOST": url_parts["host"],
        "POSTGRES_PORT": url_parts["port"],
        "POSTGRES_USER": url_parts["user"],
        "POSTGRES_PASSWORD": "",
        "POSTGRES_POOL_SIZE": str(WRITERS + 2),
        "IS_SNAPSHOTTING_ENABLED": "y",
        "CREATE_TABLE": "y",
    }
    return BenchApp(env=env)


def _es_counter_class() -> Any:
    from eventsourcing.domain import Aggregate, event

    class Counter(Aggregate):
        def __init__(self, name: str) -> None:
            self.name = name
            self.total = 0

        @event("Added")
        def add(self, quantity: int) -> None:
            self.total += quantity

    return Counter


def eventsourcing_case(app: Any, counter: Any, case: str, n: int) -> float:
    if case == "a":
        started = time.perf_counter()
        for _ in range(n):
            app.save(counter(name="x"))
        return n / (time.perf_counter() - started)
    writers = WRITERS if case == "c" else 1
    per_append = 100 if case == "d" else 1
    aggregates = [counter(name="x") for _ in range(writers)]
    for agg in aggregates:
        app.save(agg)

    def write(agg: Any) -> None:
        for _ in range(n):
            for _ in range(per_append):
                agg.add(1)
            app.save(agg)

    started = time.perf_counter()
    threads = [threading.Thread(target=write, args=(agg,)) for agg in aggregates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return writers * n * per_append / (time.perf_counter() - started)


def eventsourcing_load(app: Any, counter: Any) -> tuple[float, float]:
    agg = counter(name="x")
    for _ in range(LOAD_EVENTS // 100):
        for _ in range(100):
            agg.add(1)
        app.save(agg)

    def timed() -> float:
        samples = []
        for _ in range(5):
            started = time.perf_counter()
            loaded = app.repository.get(agg.id)
            samples.append((time.perf_counter() - started) * 1000)
            assert loaded.total == LOAD_EVENTS
        return statistics.median(samples)

    full = timed()
    app.take_snapshot(agg.id)
    return timed(), full


# ------------------------------------------------------------------------------- raw

RAW_TABLE = """
CREATE TABLE IF NOT EXISTS raw_events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE, stream_id text NOT NULL, stream_type text NOT NULL,
    version integer NOT NULL, event_type text NOT NULL, schema_version integer NOT NULL,
    data jsonb NOT NULL, metadata jsonb NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version))
"""
RAW_INSERT = (
    "INSERT INTO raw_events (event_id, stream_id, stream_type, version, event_type, "
    "schema_version, data, metadata) VALUES (%s, %s, 'Inventory', %s, 'StockAdded', 1, %s, '{}')"
)


async def raw_case(url: str, case: str, n: int) -> float:
    writers = WRITERS if case == "c" else 1
    per_append = 100 if case == "d" else 1
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(writers)]
    try:

        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            stream = _uid()
            version = 0
            for _ in range(n):
                rows = []
                for _ in range(per_append):
                    version += 1
                    rows.append(
                        (
                            uuid.uuid4(),
                            stream if case != "a" else _uid(),
                            version if case != "a" else 1,
                            '{"quantity":1}',
                        )
                    )
                if per_append == 1:
                    await conn.execute(RAW_INSERT, rows[0])
                else:
                    async with conn.transaction(), conn.cursor() as cur:
                        await cur.executemany(RAW_INSERT, rows)

        started = time.perf_counter()
        await asyncio.gather(*(write(c) for c in conns))
        return writers * n * per_append / (time.perf_counter() - started)
    finally:
        for conn in conns:
            await conn.close()


# ----------------------------------------------------------------------------- driver


def _spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:,.0f} (±{(max(values) - min(values)) / 2 / med * 100:.0f}%)" if med else "0"


def _spread_f(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:.2f} (±{(max(values) - min(values)) / 2:.2f})"


async def _repeat(fn: Callable[[], Awaitable[float]], repeats: int) -> list[float]:
    return [await fn() for _ in range(repeats)]


async def run(quick: bool, repeats: int, data_dir: Path) -> dict[str, float]:
    sizes = _sizes(quick)
    settings = load_settings(data_dir=data_dir, kafka_enabled=False)
    services = LocalServices(settings)
    with services.running_services(["postgres"]):
        base = services.running["postgres"].addresses["url"]
        admin = base.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            for db in ("bench_sagaflow", "bench_es", "bench_raw"):
                conn.execute(f"DROP DATABASE IF EXISTS {db}")
                conn.execute(f"CREATE DATABASE {db}")
        url_of = {
            db: base.rsplit("/", 1)[0] + "/" + db
            for db in ("bench_sagaflow", "bench_es", "bench_raw")
        }
        host_port = base.split("@", 1)[1].split("/", 1)[0]
        parts = {"db": "bench_es", "host": host_port.split(":")[0], "port": host_port.split(":")[1],
                 "user": base.split("//", 1)[1].split("@", 1)[0]}  # fmt: skip

        store = await PostgresEventStore.connect(url_of["bench_sagaflow"], max_size=WRITERS + 2)
        os.environ.pop("PERSISTENCE_MODULE", None)
        app = _es_app(parts)
        counter = _es_counter_class()
        with psycopg.connect(url_of["bench_raw"], autocommit=True) as conn:
            conn.execute(RAW_TABLE)

        results: dict[str, list[float]] = {}
        for case in ("a", "b", "c", "d"):
            n = sizes[case]
            # Interleave the systems within each repeat so machine noise hits all alike.
            for _ in range(repeats):
                results.setdefault(f"sagaflow.{case}", []).append(
                    await sagaflow_case(store, case, n)
                )
                results.setdefault(f"eventsourcing.{case}", []).append(
                    await asyncio.to_thread(eventsourcing_case, app, counter, case, n)
                )
                results.setdefault(f"raw.{case}", []).append(
                    await raw_case(url_of["bench_raw"], case, n)
                )
        for _ in range(repeats):
            snap, full = await sagaflow_load(store)
            results.setdefault("sagaflow.load_snapshot_ms", []).append(snap)
            results.setdefault("sagaflow.load_full_ms", []).append(full)
            es_snap, es_full = await asyncio.to_thread(eventsourcing_load, app, counter)
            results.setdefault("eventsourcing.load_snapshot_ms", []).append(es_snap)
            results.setdefault("eventsourcing.load_full_ms", []).append(es_full)
        for _ in range(repeats):
            for label, cls, every in RESERVE_VARIANTS:
                for open_ in (0, OPEN_RESERVATIONS):
                    ms, cpu_ms = await sagaflow_reserve(store, cls, open_, every)
                    results.setdefault(f"{label}.reserve_{open_}_ms", []).append(ms)
                    results.setdefault(f"{label}.reserve_{open_}_cpu_ms", []).append(cpu_ms)
        await store.close()
        app.close()

    _print_table(results, sizes)
    figures = {key: round(statistics.median(values), 2) for key, values in results.items()}
    for label, _, _ in RESERVE_VARIANTS:
        figures[f"{label}.reserve_open_over_empty"] = round(
            figures[f"{label}.reserve_{OPEN_RESERVATIONS}_ms"] / figures[f"{label}.reserve_0_ms"],
            2,
        )
    return figures


def _print_table(results: dict[str, list[float]], sizes: dict[str, int]) -> None:
    names = {
        "a": f"(a) single appends, new streams ({sizes['a']})",
        "b": f"(b) appends with expected version ({sizes['b']})",
        "c": f"(c) {WRITERS} concurrent writers ({WRITERS}x{sizes['c']})",
        "d": f"(d) 100-event batches ({sizes['d']} batches)",
    }
    header = f"{'events/s, median (±half-range)':48}"
    print(f"{header} {'sagaflow':>16} {'eventsourcing':>16} {'raw':>16} {'sf/es':>7} {'sf/raw':>7}")
    for case, label in names.items():
        sf, es, raw = (results[f"{s}.{case}"] for s in ("sagaflow", "eventsourcing", "raw"))
        print(f"{label:48} {_spread(sf):>16} {_spread(es):>16} {_spread(raw):>16} "
              f"{statistics.median(sf) / statistics.median(es):>6.2f}x "
              f"{statistics.median(sf) / statistics.median(raw):>6.2f}x")  # fmt: skip
    print(f"\nload an aggregate of {LOAD_EVENTS:,} events (ms, median of repeats)")
    for system in ("sagaflow", "eventsourcing"):
        snap = statistics.median(results[f"{system}.load_snapshot_ms"])
        full = statistics.median(results[f"{system}.load_full_ms"])
        print(f"  {system:14} with snapshot {snap:8.2f}   full replay {full:8.2f}")
    print(
        f"\n(f) reserve on a SKU with 0 / {OPEN_RESERVATIONS:,} open reservations "
        f"(ms per reserve, {RESERVES} sequential, median (±half-range))"
    )
    for label, name in (
        ("sagaflow", "totals in it, every 20 (default)"),
        ("sagaflow_every_100", "totals in it, every 100"),
        ("whole_snapshot", "every reservation, every 100 (before)"),
    ):
        for unit in ("ms", "cpu_ms"):
            empty = results[f"{label}.reserve_0_{unit}"]
            full_ = results[f"{label}.reserve_{OPEN_RESERVATIONS}_{unit}"]
            print(
                f"  {name:34} {'wall' if unit == 'ms' else 'CPU':>4} {_spread_f(empty):>14} "
                f"{_spread_f(full_):>14}   open/empty "
                f"{statistics.median(full_) / statistics.median(empty):5.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sagaflow-bench-") as tmp:
        figures = asyncio.run(run(args.quick, args.repeats, Path(tmp)))
    print("RESULT " + json.dumps(figures, sort_keys=True))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
