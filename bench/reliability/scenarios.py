"""The fault scenarios: orders flow through the API while one fault is injected.

Every scenario has the same shape (``run_scenario``): register its own SKUs, place
orders from its own customers with a bounded concurrency (a client that retries
with the same Idempotency-Key, as a real one would), cancel some and ship some,
inject its fault concurrently, then wait (bounded) for every saga to settle and
the relay and projector to catch up, and hand the result to the oracle.
``recovery_s`` is the time from the end of the fault to that point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import psycopg
from temporalio.client import WorkflowExecutionStatus

from bench.reliability.harness import (
    SETTLED,
    Harness,
    order_body,
    register_products,
    request_with_retry,
    temporal_diagnosis,
)
from bench.reliability.oracle import run_oracle, wait_caught_up
from eventstore.migrate import psycopg_url
from sagaflow.services.base import ServiceError, stop_process
from sagaflow.settings import Settings, Transport
from streaming.relay import relay_lag


@dataclass(frozen=True)
class Sizes:
    """How big and how long each scenario runs."""

    orders: int
    concurrency: int
    #: seconds between two kills (worker, relay, projector)
    kill_every_s: float
    #: how long a stopped service stays down
    outage_s: float
    #: how long the write transaction is held open (above the relay's alert bound)
    hold_s: float
    #: same-key request bursts of 200 in the idempotency scenario
    storms: int
    #: orders placed per second (None: as fast as ``concurrency`` allows)
    rate_per_s: float | None = None
    #: the target: every saga settled within this after the last fault
    settle_s: float = 60.0
    #: of the orders shipped, the share then delivered (the soak's mix)
    deliver_share: float = 0.0


QUICK = Sizes(orders=24, concurrency=6, kill_every_s=2.5, outage_s=4, hold_s=12, storms=1)
# Why a paced load in the long version: unpaced, 1,000 orders are accepted in about
# half a minute and the sagas queue up in Temporal; the whole stack on two cores runs
# about 5 sagas/s, so the queue alone would take minutes to drain after the fault
# ends, whatever the fault. Paced below that rate, the fault hits a steady flow of
# sagas for the whole run, and "settled within 60 s after the last fault" measures
# recovery, not the queue. Why kills every 8 s (jittered), not 4: a restarted worker
# needs about 3 s to import, connect and poll, and each kill costs the sagas it was
# running the workflow task timeout (10 s); at a 4 s interval the worker is down
# most of the time and those sagas are caught by kill after kill.
LONG = Sizes(
    orders=1000, concurrency=24, kill_every_s=8, outage_s=10, hold_s=40, storms=5, rate_per_s=3
)
#: The worker-kill scenario's pace: with the worker down about 3 s of every 8, the
#: stack settled about 2.5 sagas/s (measured at an offered 4/s), so it gets 2/s.
WORKER_KILL_RATE_PER_S = 2.0

#: The relay's alert bound on a held feed horizon (SAGAFLOW_RELAY_HORIZON_ALERT_S,
#: default); the scenario holds a transaction beyond it.
HORIZON_ALERT_BOUND_S: float = Settings.model_fields["relay_horizon_alert_s"].default
STORM_SIZE = 200
CANCEL_SHARE = 0.1
SHIP_SHARE = 0.1


@dataclass
class ScenarioResult:
    """The figures of one scenario."""

    name: str
    orders: int = 0
    terminal_pct: float = 0.0
    events: int = 0
    lost: int = 0
    duplicated: int = 0
    violations: list[str] = field(default_factory=list)
    recovery_s: float | None = None
    #: scenario-specific observations (faults injected, horizon held, Kafka copies...)
    notes: dict[str, Any] = field(default_factory=dict)
    #: when a target is missed: what Temporal and the worker log say of the orders
    diagnosis: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, float | int | None]:
        """The flat ``<scenario>.<figure>`` entries of the RESULT line."""
        return {
            f"{self.name}.orders": self.orders,
            f"{self.name}.events": self.events,
            f"{self.name}.lost": self.lost,
            f"{self.name}.duplicated": self.duplicated,
            f"{self.name}.violations": len(self.violations),
            f"{self.name}.terminal_pct": self.terminal_pct,
            f"{self.name}.recovery_s": self.recovery_s,
        }


@dataclass
class Load:
    """The orders of one scenario as the client saw them."""

    harness: Harness
    name: str
    sizes: Sizes
    skus: list[str]
    rng: random.Random
    customer_prefix: str
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    cancels: set[str] = field(default_factory=set)
    #: cancels whose request has been answered (until then the saga may still move)
    cancels_answered: set[str] = field(default_factory=set)
    ships: set[str] = field(default_factory=set)
    #: shipped orders to deliver too (``sizes.deliver_share`` of the ships)
    delivers: set[str] = field(default_factory=set)
    status: dict[str, str] = field(default_factory=dict)
    placed: asyncio.Event = field(default_factory=asyncio.Event)
    #: orders whose status query failed with a nondeterminism error on replay (an SDK
    #: defect, see ``closed_status``); their status came from the run's result
    replay_failures: set[str] = field(default_factory=set)
    #: when ``settle`` gives up: unbounded until the fault ends, then 60 s after
    deadline: float = float("inf")

    async def place_all(self, http: httpx.AsyncClient) -> None:
        """Place ``sizes.orders`` orders, ``sizes.concurrency`` at a time."""
        limit = asyncio.Semaphore(self.sizes.concurrency)
        rate = self.sizes.rate_per_s
        began = time.monotonic()

        async def one(i: int) -> None:
            if rate:
                await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            async with limit:
                await self.place_one(http, f"{self.customer_prefix}{i % 17}")

        try:
            await asyncio.gather(*(one(i) for i in range(self.sizes.orders)))
        finally:
            self.placed.set()

    async def place_one(self, http: httpx.AsyncClient, customer: str) -> None:
        """POST one order (retrying with its key); cancel it at once in some cases."""
        key = uuid.uuid4().hex
        body = order_body(self.rng, customer, self.skus)
        resp = await request_with_retry(
            lambda: http.post("/orders", json=body, headers={"Idempotency-Key": key}),
            within_s=self.sizes.settle_s,
        )
        if resp is None or resp.status_code != 202:
            self.refused[str(resp.status_code if resp is not None else "no answer")] += 1
            return
        order_id = resp.json()["order_id"]
        self.accepted[order_id] = body
        roll = self.rng.random()
        if roll < CANCEL_SHARE:
            self.cancels.add(order_id)
            # 200 (cancelled) or 409 (too late, e.g. already compensated) are both fine.
            await request_with_retry(
                lambda: http.post(f"/orders/{order_id}/cancel", json={"reason": "reliability"}),
                within_s=self.sizes.settle_s,
            )
            self.cancels_answered.add(order_id)
        elif roll < CANCEL_SHARE + SHIP_SHARE:
            self.ships.add(order_id)
            if self.rng.random() < self.sizes.deliver_share:
                self.delivers.add(order_id)

    async def closed_status(self, order_id: str) -> str | None:
        """The saga's status from its run's result, once the run has closed (None
        while it runs, or when Temporal does not answer).

        Why: temporalio 1.35 can fail to replay a history in which an update arrived
        on a workflow task that also had to rebuild an evicted run (after a Temporal
        restart): every later status query then fails with a nondeterminism error
        although the run completed. The run's result needs no replay, so the saga's
        outcome can still be checked against the store; the orders are reported
        (``replay_failures``). tests/replay/test_known_defects.py pins the defect.
        """
        from sagaflow.clients import connect_temporal

        try:
            client = await connect_temporal(self.harness.settings)
            handle = client.get_workflow_handle(order_id)
            if (await handle.describe()).status in (None, WorkflowExecutionStatus.RUNNING):
                return None
            result = await handle.result()
        except Exception:  # Temporal restarting, or a failed run: ask again later
            return None
        return str(result.get("status")) if isinstance(result, dict) else None

    async def settle(self, http: httpx.AsyncClient) -> float | None:
        """Poll the sagas not yet settled (shipping the chosen ones) until every order
        is placed and settled; the monotonic time when that held, or None once
        ``self.deadline`` passed.

        Why it runs alongside the load, not after it: a saga settled during the run
        is not asked again, so after the fault only the few still moving are polled.
        Polled all at once after the run, the 1,000 queries (each a replay on a
        worker whose cache a kill emptied) took most of the 60 s being measured.
        """
        settled: set[str] = set()
        shipped: set[str] = set()
        limit = asyncio.Semaphore(16)

        async def poll(order_id: str) -> None:
            async with limit:
                try:
                    resp = await http.get(f"/orders/{order_id}/saga", timeout=10)
                except (httpx.TransportError, httpx.TimeoutException):
                    return
                if resp.status_code == 409 and "ondeterminism" in resp.text:
                    closed = await self.closed_status(order_id)
                    if closed is None:
                        return
                    self.replay_failures.add(order_id)
                    status = closed
                elif resp.status_code != 200:
                    return
                else:
                    status = str(resp.json().get("status"))
                self.status[order_id] = status
                if status == "awaiting_shipment" and order_id in self.ships:
                    if order_id not in shipped:
                        try:
                            resp = await http.post(
                                f"/orders/{order_id}/ship",
                                json={"tracking_number": f"T-{order_id[:8]}", "carrier": "DHL"},
                                timeout=30,
                            )
                        except (httpx.TransportError, httpx.TimeoutException):
                            return  # a worker restart can delay the update: ask again
                        if resp.status_code == 200:
                            shipped.add(order_id)
                    return  # wait for "shipped"
                if status == "shipped" and order_id in self.delivers:
                    try:
                        resp = await http.post(f"/orders/{order_id}/deliver", json={}, timeout=30)
                    except (httpx.TransportError, httpx.TimeoutException):
                        return
                    return  # 200 or 409 (delivered already): wait for "delivered"
                # A saga seen waiting for shipment before its cancel landed is not
                # settled yet: the cancel will compensate it.
                if status in SETTLED and (
                    order_id not in self.cancels or order_id in self.cancels_answered
                ):
                    settled.add(order_id)

        while time.monotonic() < self.deadline:
            pending = set(self.accepted) - settled
            if not pending and self.placed.is_set():
                return time.monotonic()
            await asyncio.gather(*(poll(o) for o in pending))
            if set(self.accepted) - settled or not self.placed.is_set():
                await asyncio.sleep(0.5)
        return None


Fault = Callable[[Load], Awaitable[dict[str, Any]]]


async def run_scenario(
    h: Harness,
    name: str,
    sizes: Sizes,
    fault: Fault | None,
    *,
    extra_skus: tuple[str, ...] = (),
    seed: int = 7,
) -> ScenarioResult:
    """Load plus ``fault`` (concurrently), then settle, catch up and check."""
    token = uuid.uuid4().hex[:6]
    skus = [f"R{token}-{i}" for i in range(4)]
    load = Load(h, name, sizes, skus, random.Random(seed), customer_prefix=f"rel-{token}-c")
    result = ScenarioResult(name)
    async with h.http() as http:
        # One scarce SKU makes out-of-stock compensations part of the run.
        await register_products(http, skus[:1], stock=max(4, sizes.orders // 3))
        await register_products(http, skus[1:], stock=sizes.orders * 4)
        all_skus = [*skus, *(f"R{token}-{s}" for s in extra_skus)]
        if extra_skus:
            await register_products(http, all_skus[len(skus) :], stock=10)
        notes: dict[str, Any] = {}
        placing = asyncio.create_task(load.place_all(http))
        progress = asyncio.create_task(_report_progress(http, load))
        settling = asyncio.create_task(load.settle(http))
        try:
            if fault is not None:
                notes = await fault(load)
            await placing
            fault_end = time.monotonic()
            deadline = load.deadline = fault_end + sizes.settle_s
            settled_at = await settling
        finally:
            for task in (placing, progress, settling):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    store = await h.store()
    try:
        caught_up = await wait_caught_up(
            store, h.settings, within_s=max(5.0, deadline - time.monotonic())
        )
        if settled_at is not None and caught_up is not None:
            result.recovery_s = round(max(settled_at, time.monotonic()) - fault_end, 2)
        report = await run_oracle(
            store,
            h.settings,
            customer_prefix=load.customer_prefix,
            skus=all_skus,
            accepted=load.accepted,
            saga_status=load.status,
        )
    finally:
        await store.close()
    if caught_up is None:
        report.violations.append("relay/projector still behind at the deadline")
    result.orders = len(load.accepted)
    result.terminal_pct = report.terminal_pct
    result.events, result.lost, result.duplicated = report.events, report.lost, report.duplicated
    result.violations = report.violations
    result.notes = {
        "orders_in_store": report.orders,
        "refused": dict(load.refused),
        "kafka_copies": report.kafka_copies,
        "replay_failures": sorted(load.replay_failures),
        **notes,
    }
    if not load.accepted:
        result.violations.append(f"no order accepted (refused: {dict(load.refused)})")
    if result.violations or settled_at is None:
        unsettled = [f"order {o}" for o in load.accepted if load.status.get(o) not in SETTLED]
        result.diagnosis = await temporal_diagnosis(h, [*result.violations, *unsettled])
    return result


async def _report_progress(http: httpx.AsyncClient, load: Load, every_s: float = 15) -> None:
    """Print, every ``every_s``, the orders accepted and the sagas by status (all
    scenarios' sagas, from the read model): a backlog growing under a fault shows."""
    began = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        counts = "?"
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            rows = (await http.get("/analytics/sagas", timeout=5)).json()
            counts = " ".join(
                f"{k}={v}" for row in rows for k, v in row.items() if k != "saga_type"
            )
        print(
            f"[{load.name}] {time.monotonic() - began:6.0f} s  accepted={len(load.accepted)}"
            f"  sagas: {counts}",
            file=sys.stderr,
            flush=True,
        )


# --- faults ----------------------------------------------------------------------------


async def _during_load(load: Load, every_s: float, minimum: int, act: Callable[[int], Any]) -> int:
    """Call ``act(n)`` about every ``every_s`` (jittered ±50%, seeded) while orders are
    placed, at least ``minimum`` times; returns how many times it ran. Bounded by the
    placement plus ``minimum``.

    Why jitter: at a fixed interval near a multiple of the workflow task timeout the
    sagas stalled by one kill resume just as the next kill lands, every time."""
    n = 0
    jitter = random.Random(len(load.skus) + minimum)
    while n < minimum or not load.placed.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.placed.wait(), every_s * jitter.uniform(0.5, 1.5))
        if load.placed.is_set() and n >= minimum:
            break
        await act(n)
        n += 1
    return n


async def _kill_restart(h: Harness, name: str, down_s: float = 0.3) -> None:
    h.stack.kill(name, signal.SIGKILL)
    await asyncio.sleep(down_s)
    h.stack.start_process(name)


async def worker_kill(h: Harness, sizes: Sizes) -> ScenarioResult:
    """kill -9 the worker every few seconds while sagas run."""
    if sizes.rate_per_s:
        sizes = replace(sizes, rate_per_s=min(sizes.rate_per_s, WORKER_KILL_RATE_PER_S))

    async def fault(load: Load) -> dict[str, Any]:
        kills = await _during_load(
            load, sizes.kill_every_s, 3, lambda _n: _kill_restart(h, "worker")
        )
        return {"worker_kills": kills}

    return await run_scenario(h, "worker_kill", sizes, fault)


async def relay_projector_kill(h: Harness, sizes: Sizes) -> ScenarioResult:
    """kill -9 the relay and the projector mid-batch, alternately."""
    mid_batch = Counter[str]()

    async def act(n: int) -> None:
        name = "relay" if n % 2 == 0 else "projector"
        # Mid-batch: wait (briefly) until the process has work pending, then kill.
        store = await h.store()
        try:
            for _ in range(20):
                lag = await relay_lag(store, h.settings.relay_name)
                if lag.events > 0:
                    mid_batch[name] += 1
                    break
                await asyncio.sleep(0.05)
        finally:
            await store.close()
        await _kill_restart(h, name)

    async def fault(load: Load) -> dict[str, Any]:
        kills = await _during_load(load, sizes.kill_every_s / 2, 4, act)
        return {"kills": kills, "killed_with_work_pending": dict(mid_batch)}

    return await run_scenario(h, "relay_projector_kill", sizes, fault)


#: processes in a fleet scenario (three workers on one task queue, three projectors in
#: one consumer group)
FLEET_SIZE = 3


async def worker_fleet_kill(h: Harness, sizes: Sizes) -> ScenarioResult:
    """Three workers on one task queue; kill -9 a random one every few seconds (the
    others carry on, and the killed one's sagas move to them)."""
    rng = random.Random(11)
    killed = Counter[str]()
    with h.fleet("worker", FLEET_SIZE) as names:

        async def act(_n: int) -> None:
            name = rng.choice(names)
            killed[name] += 1
            await _kill_restart(h, name)

        async def fault(load: Load) -> dict[str, Any]:
            kills = await _during_load(load, sizes.kill_every_s, 3, act)
            return {"worker_kills": kills, "killed": dict(killed), "workers": len(names)}

        return await run_scenario(h, "worker_fleet_kill", sizes, fault)


async def projector_group_kill(h: Harness, sizes: Sizes) -> ScenarioResult:
    """Three projectors in one consumer group; kill -9 one at a time under load (each
    kill hands its partitions to the others, and its restart takes some back). The
    oracle's comparison with a rebuild proves the read models counted nothing twice."""
    killed = Counter[str]()
    with h.fleet("projector", FLEET_SIZE) as names:

        async def act(n: int) -> None:
            name = names[n % len(names)]
            killed[name] += 1
            # Down long enough for the group to rebalance without it.
            await _kill_restart(h, name, down_s=1.0)

        async def fault(load: Load) -> dict[str, Any]:
            kills = await _during_load(load, sizes.kill_every_s, len(names), act)
            return {"projector_kills": kills, "killed": dict(killed), "projectors": len(names)}

        return await run_scenario(h, "projector_group_kill", sizes, fault)


def _service_outage(h: Harness, service: str, sizes: Sizes) -> Fault:
    async def fault(load: Load) -> dict[str, Any]:
        # Let a third of the orders in first, so the outage hits sagas mid-way.
        for _ in range(200):
            if len(load.accepted) >= sizes.orders // 3 or load.placed.is_set():
                break
            await asyncio.sleep(0.1)
        assert h.stack.services is not None
        started = time.monotonic()
        await asyncio.to_thread(h.stack.services.stop_one, service)
        await asyncio.sleep(sizes.outage_s)
        retries = 0
        give_up = time.monotonic() + 120
        while True:
            try:
                await asyncio.to_thread(h.stack.services.start_one, service)
                break
            except ServiceError:
                # Why retry: a fixed port can stay unbindable for a while after the
                # stop (see the report's findings); bounded by ``give_up``.
                if time.monotonic() > give_up:
                    raise
                retries += 1
                await asyncio.sleep(2)
        return {
            f"{service}_down_s": round(time.monotonic() - started, 1),
            "start_retries": retries,
        }

    return fault


async def kafka_restart(h: Harness, sizes: Sizes) -> ScenarioResult:
    """Stop the Kafka broker mid-run and start it again."""
    return await run_scenario(h, "kafka_restart", sizes, _service_outage(h, "kafka", sizes))


async def rabbitmq_restart(h: Harness, sizes: Sizes) -> ScenarioResult:
    """Stop the RabbitMQ broker mid-run and start it again (same node, same data):
    durable quorum queues and persistent messages survive; the relay re-sends what was
    not confirmed and the projector acknowledges only after its commit."""
    if h.settings.transport_kind is not Transport.RABBITMQ:
        raise ValueError("rabbitmq_restart needs the stack on RabbitMQ (--transport rabbitmq)")
    return await run_scenario(h, "rabbitmq_restart", sizes, _service_outage(h, "rabbitmq", sizes))


async def postgres_restart(h: Harness, sizes: Sizes) -> ScenarioResult:
    """Stop PostgreSQL mid-run and start it again (same port, same data)."""
    return await run_scenario(h, "postgres_restart", sizes, _service_outage(h, "postgres", sizes))


async def temporal_restart(h: Harness, sizes: Sizes) -> ScenarioResult:
    """Stop the Temporal server mid-run and start it again (persisted to its file)."""
    return await run_scenario(h, "temporal_restart", sizes, _service_outage(h, "temporal", sizes))


COMMIT_THEN_FAIL_ACTIVITY = "charge_payment"
_FAULT_LOG = re.compile(r"injected fault: (\w+) committed")


async def commit_then_fail(
    h: Harness, sizes: Sizes, activity: str = COMMIT_THEN_FAIL_ACTIVITY
) -> ScenarioResult:
    """An activity commits its events, then fails before reporting (worker fault point);
    its retry must write nothing twice."""
    log = h.stack.log_dir() / "worker.log"
    before = log.read_text(errors="replace") if log.exists() else ""
    await asyncio.to_thread(
        h.restart_process, "worker", {"SAGAFLOW_FAULT_COMMIT_THEN_FAIL": activity}
    )
    try:
        result = await run_scenario(h, "commit_then_fail", sizes, None)
    finally:
        # Why "" and not a pop: the stack's env is what every later restart uses.
        await asyncio.to_thread(
            h.restart_process, "worker", {"SAGAFLOW_FAULT_COMMIT_THEN_FAIL": ""}
        )
    after = log.read_text(errors="replace") if log.exists() else ""
    fired = len(_FAULT_LOG.findall(after[len(before) :]))
    result.notes["fault_fired"] = fired
    return result


async def held_transaction(h: Harness, sizes: Sizes) -> ScenarioResult:
    """A write transaction held open beyond the relay's alert bound while orders flow:
    the feed must wait for it (never skip its event) and the hold must be visible."""
    hold_s = max(sizes.hold_s, HORIZON_ALERT_BOUND_S + 2)
    seen = {"feed_status_max_s": 0.0, "metrics_max_s": 0.0}

    async def fault(load: Load) -> dict[str, Any]:
        sku = load.skus[0].rsplit("-", 1)[0] + "-HELD"
        event = {
            "event_id": str(uuid.uuid4()),
            "event_type": "StockAdded",
            "schema_version": 1,
            "data": {"quantity": 5},
            "metadata": {"correlation_id": f"held-{sku}", "user_id": "reliability"},
        }
        await asyncio.sleep(1.0)
        # Why a raw connection: the store's own pool is autocommit and bounded by
        # timeouts; this is the misbehaving writer the feed must survive.
        conn = await psycopg.AsyncConnection.connect(psycopg_url(h.database_url))
        async with conn, conn.transaction():
            await conn.execute(
                "SELECT * FROM sagaflow_append(%s, 'Inventory', -1, 1, %s::jsonb)",
                (f"inventory-{sku}", json.dumps([event])),
            )
            held_since = time.monotonic()
            store = await h.store()
            try:
                async with h.http() as http:
                    while time.monotonic() - held_since < hold_s:
                        status = await store.feed_status()
                        seen["feed_status_max_s"] = max(
                            seen["feed_status_max_s"], status.horizon_held_s
                        )
                        seen["metrics_max_s"] = max(seen["metrics_max_s"], await _gauge(http))
                        await asyncio.sleep(1.0)
            finally:
                await store.close()
        return {"held_s": hold_s, **{k: round(v, 1) for k, v in seen.items()}}

    result = await run_scenario(h, "held_transaction", sizes, fault, extra_skus=("HELD",))
    # The hold must be visible to operators: the store reports it and /metrics shows it.
    for source, value in seen.items():
        if value < HORIZON_ALERT_BOUND_S:
            result.violations.append(
                f"horizon held {hold_s:.0f} s but {source} showed at most {value:.1f} s"
            )
    return result


async def _gauge(http: httpx.AsyncClient) -> float:
    with contextlib.suppress(httpx.HTTPError):
        text = (await http.get("/metrics")).text
        match = re.search(r"^sagaflow_feed_horizon_held_seconds\s+([0-9.eE+-]+)", text, re.M)
        if match:
            return float(match.group(1))
    return 0.0


async def idempotency_storm(h: Harness, sizes: Sizes) -> ScenarioResult:
    """200 concurrent POSTs with one Idempotency-Key (per storm), during normal load."""
    storm_notes: dict[str, Any] = {"statuses": Counter(), "order_ids_per_key": []}
    problems: list[str] = []

    async def fault(load: Load) -> dict[str, Any]:
        async with h.http(max_connections=STORM_SIZE, timeout_s=60) as storm_http:
            for n in range(sizes.storms):
                key = uuid.uuid4().hex
                body = order_body(load.rng, f"{load.customer_prefix}storm{n}", load.skus)
                answers = await asyncio.gather(
                    *(
                        storm_http.post("/orders", json=body, headers={"Idempotency-Key": key})
                        for _ in range(STORM_SIZE)
                    ),
                    return_exceptions=True,
                )
                ids = set()
                for answer in answers:
                    if isinstance(answer, BaseException):
                        storm_notes["statuses"][type(answer).__name__] += 1
                        continue
                    storm_notes["statuses"][str(answer.status_code)] += 1
                    if answer.status_code == 202:
                        ids.add(answer.json()["order_id"])
                        load.accepted[answer.json()["order_id"]] = body
                storm_notes["order_ids_per_key"].append(len(ids))
                if len(ids) != 1:
                    problems.append(f"storm {n}: {len(ids)} distinct order ids for one key")
        bad = {s: c for s, c in storm_notes["statuses"].items() if s not in ("202", "429")}
        if bad:
            problems.append(f"same-key POSTs answered {bad} (only 202, or 429, expected)")
        return {"storm_statuses": dict(storm_notes["statuses"])}

    result = await run_scenario(h, "idempotency_storm", sizes, fault)
    result.violations += problems
    return result


#: the second relay of ``relay_failover`` (its SAGAFLOW_RELAY_ID and process name)
RELAY_REPLICA = "relay-replica"
#: the promise of relay HA: the standby holds the lease this soon after a kill -9
TAKEOVER_BOUND_S = 5.0


async def relay_failover(h: Harness, sizes: Sizes) -> ScenarioResult:
    """Two relays; kill -9 whichever publishes, again and again, while orders flow: the
    standby must take the lease over within 5 s each time and lose nothing."""
    from bench.reliability.harness import start_relay_replica, stop_relay_replica
    from streaming.lease import LeaseStatus, destination, lease_status

    dest = destination(h.settings)
    takeovers: list[float] = []
    restarts: list[float] = []
    problems: list[str] = []

    async def lease(store: Any) -> LeaseStatus | None:
        async with store.pool.connection() as conn:
            return await lease_status(conn, dest)

    def process_of(holder: str) -> str | None:
        for name in ("relay", RELAY_REPLICA):
            proc = h.stack.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            # the replica is named by its SAGAFLOW_RELAY_ID, the stack's relay by host:pid
            if holder == name or holder.rsplit(":", 1)[-1] == str(proc.pid):
                return name
        return None

    async def both_connected(store: Any) -> bool:
        """Both relays have their lease sessions (the standby polls the lock)."""
        async with store.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s "
                "AND datname = current_database()",
                ("sagaflow relay %",),
            )
            row = await cur.fetchone()
        return bool(row and row[0] >= 2)

    async def act(n: int) -> None:
        store = await h.store()
        try:
            # Why wait for both: the promise is about a standby that runs; a relay
            # killed before its restarted peer has even connected would time its start.
            before = await lease(store)
            for _ in range(300):
                ready = before is not None and before.held and process_of(before.holder)
                if ready and await both_connected(store):
                    break
                await asyncio.sleep(0.1)
                before = await lease(store)
            active = process_of(before.holder) if before is not None else None
            if before is None or active is None:
                problems.append(f"kill {n}: no live relay holds the lease ({before})")
                return
            h.stack.kill(active, signal.SIGKILL)
            killed = time.monotonic()
            while time.monotonic() - killed < 30:
                now = await lease(store)
                if now is not None and now.held and now.epoch > before.epoch:
                    takeovers.append(round(time.monotonic() - killed, 2))
                    break
                await asyncio.sleep(0.05)
            else:
                problems.append(f"kill {n}: no relay took {dest} over within 30 s")
        finally:
            await store.close()
        # The killed relay comes back, now as the standby. Why time it: it is what a
        # single relay's outage would be (a supervisor restarting it), the baseline
        # beside the takeover times.
        restarted = time.monotonic()
        if active == "relay":
            h.stack.start_process("relay")
        else:
            start_relay_replica(h, RELAY_REPLICA)
        store = await h.store()
        try:
            for _ in range(600):  # at most 30 s
                if await both_connected(store):
                    break
                await asyncio.sleep(0.05)
        finally:
            await store.close()
        restarts.append(round(time.monotonic() - restarted, 2))

    async def fault(load: Load) -> dict[str, Any]:
        kills = await _during_load(load, sizes.kill_every_s, 4, act)
        return {"relay_kills": kills}

    start_relay_replica(h, RELAY_REPLICA)
    try:
        result = await run_scenario(h, "relay_failover", sizes, fault)
        async with h.http() as http:
            metrics = (await http.get("/metrics")).text
    finally:
        await asyncio.to_thread(stop_relay_replica, h, RELAY_REPLICA)
        if not h.process_alive("relay"):
            h.stack.start_process("relay")
    result.violations += problems
    result.notes["takeover_s"] = takeovers
    if takeovers:
        result.notes["takeover_p50_s"] = statistics.median(takeovers)
        result.notes["takeover_max_s"] = max(takeovers)
        result.notes["restart_to_standby_p50_s"] = statistics.median(restarts or [0.0])
        if max(takeovers) > TAKEOVER_BOUND_S:
            result.violations.append(
                f"a takeover took {max(takeovers):.1f} s (bound {TAKEOVER_BOUND_S:.0f} s)"
            )
    # /metrics names the one relay holding the lease, and counts the takeovers
    leader = re.findall(
        r'^sagaflow_relay_leader\{[^}]*relay_id="([^"]+)"[^}]*\} 1\.0$', metrics, re.M
    )
    counted = re.search(r"^sagaflow_relay_takeovers_total ([0-9.]+)$", metrics, re.M)
    result.notes["metrics_leader"] = leader
    result.notes["metrics_takeovers"] = float(counted.group(1)) if counted else None
    if len(leader) != 1 or not counted or float(counted.group(1)) < len(takeovers):
        result.violations.append(
            f"/metrics: leader {leader}, takeovers {result.notes['metrics_takeovers']}"
        )
    return result


#: the gap relay leaves out version 1 of one Order stream in this many
GAP_DROP_EVERY = 5
_NOT_ON_TOPIC = re.compile(r"^(\d+) stored event\(s\) not in Kafka$")


async def _gaps_healed(h: Harness) -> int:
    store = await h.store()
    try:
        async with store.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT value FROM projection_counters WHERE name = 'gaps_healed'"
            )
            row = await cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        await store.close()


async def version_gap(h: Harness, sizes: Sizes) -> ScenarioResult:
    """The relay leaves events out on purpose (``bench.reliability.gap_relay``): the
    projector sees version 2 of a stream first, heals version 1 from the event store,
    and nothing stalls. The oracle's "not on the topic" count must equal the events
    left out, every one of them applied from the store."""
    import sys

    from sagaflow.services.base import spawn

    dropped_file = h.stack.log_dir() / f"gap-dropped-{uuid.uuid4().hex[:6]}.txt"
    dropped_file.touch()
    healed_before = await _gaps_healed(h)
    relay = h.stack.procs.get("relay")
    if relay is not None and relay.poll() is None:
        # Why graceful: the stack's relay gives its lease up at once.
        await asyncio.to_thread(stop_process, relay.pid, sig=signal.SIGTERM, timeout_s=30)
    env = {
        **h.stack.env,
        "SAGAFLOW_GAP_DROP_EVERY": str(GAP_DROP_EVERY),
        "SAGAFLOW_GAP_DROPPED_FILE": str(dropped_file),
        "SAGAFLOW_RELAY_ID": "relay-gap",
    }
    argv = [sys.executable, "-m", "bench.reliability.gap_relay"]
    h.stack.procs["relay-gap"] = spawn(argv, log_file=h.stack.log_dir() / "relay-gap.log", env=env)
    try:
        result = await run_scenario(h, "version_gap", sizes, None)
    finally:
        gap = h.stack.procs.pop("relay-gap")
        if gap.poll() is None:
            await asyncio.to_thread(stop_process, gap.pid, sig=signal.SIGTERM, timeout_s=30)
        h.stack.start_process("relay")
    left_out = len(dropped_file.read_text().split())
    healed = await _gaps_healed(h) - healed_before
    result.notes |= {"left_out": left_out, "gaps_healed": healed}
    kept: list[str] = []
    for violation in result.violations:
        match = _NOT_ON_TOPIC.match(violation)
        if match and int(match.group(1)) == left_out:
            result.lost -= left_out  # left out on purpose; healed (checked below)
        else:
            kept.append(violation)
    result.violations = kept
    if left_out == 0:
        result.violations.append("the gap relay left nothing out: no gap was made")
    elif healed < left_out:
        result.violations.append(f"{left_out} event(s) left out, only {healed} gap(s) healed")
    return result


SCENARIOS: dict[str, Callable[[Harness, Sizes], Awaitable[ScenarioResult]]] = {
    "worker_kill": worker_kill,
    "relay_projector_kill": relay_projector_kill,
    "kafka_restart": kafka_restart,
    "rabbitmq_restart": rabbitmq_restart,
    "postgres_restart": postgres_restart,
    "temporal_restart": temporal_restart,
    "commit_then_fail": commit_then_fail,
    "held_transaction": held_transaction,
    "idempotency_storm": idempotency_storm,
    "worker_fleet_kill": worker_fleet_kill,
    "projector_group_kill": projector_group_kill,
    "relay_failover": relay_failover,
    "version_gap": version_gap,
}

#: scenarios that exist for one transport only (the others run on either)
ONLY_ON: dict[str, Transport] = {
    "kafka_restart": Transport.KAFKA,
    "rabbitmq_restart": Transport.RABBITMQ,
}


def scenarios_for(transport: Transport | str) -> list[str]:
    """The scenarios a stack on ``transport`` runs, in their usual order."""
    kind = Transport(transport)
    return [name for name in SCENARIOS if ONLY_ON.get(name, kind) is kind]


# --- the three-broker cluster -----------------------------------------------------------


async def kafka_leader_kill(h: Harness, sizes: Sizes) -> ScenarioResult:
    """kill -9 the leader of the events topic's busiest partition (three brokers, RF 3,
    min.insync.replicas=2, acks=all) while orders flow; restart it once the controller
    has moved the leadership, wait until it is back in sync, and again."""
    from sagaflow.services.kafka.cluster import (
        SESSION_TIMEOUT_MS,
        KafkaCluster,
        busiest_partition,
        describe_partitions,
    )
    from streaming.kafka import quiet_kafka_logs

    quiet_kafka_logs()  # every probe of a killed broker would log its refused connection
    assert h.stack.services is not None
    cluster = h.stack.services.service("kafka")
    if not isinstance(cluster, KafkaCluster):
        raise ServiceError(
            "kafka_leader_kill runs on the three-broker stack (SAGAFLOW_KAFKA_BROKERS=3)"
        )
    topic, bootstrap = h.settings.kafka_topic, cluster.bootstrap
    #: the controller fences a dead broker after its session timeout, plus a controller
    #: election first when the node was the active controller
    failover_bound_s = SESSION_TIMEOUT_MS / 1000 + 20
    kills: list[dict[str, Any]] = []
    problems: list[str] = []

    async def act(_n: int) -> None:
        partition = await busiest_partition(bootstrap, topic)
        if partition is None:
            problems.append(f"topic {topic} has no partitions to pick a leader from")
            return
        leader = (await describe_partitions(bootstrap, topic))[partition].leader
        killed_at = time.monotonic()
        cluster.kill_node(leader)
        # Why wait for the new leader before the restart: restarted sooner, the node
        # would be back before the controller fenced it, and no failover would happen.
        after = (await describe_partitions(bootstrap, topic))[partition]
        while after.leader in (leader, -1) and time.monotonic() - killed_at < failover_bound_s:
            await asyncio.sleep(0.25)
            after = (await describe_partitions(bootstrap, topic))[partition]
        failover_s = time.monotonic() - killed_at
        if after.leader in (leader, -1):
            problems.append(
                f"partition {partition}: {failover_bound_s:.0f} s after its leader {leader} "
                f"died, leader {after.leader}, in sync {list(after.isr)}"
            )
        await asyncio.sleep(max(0.0, sizes.outage_s - failover_s))
        cluster.start_node(leader)  # from the loop's (main) thread: see start_node
        await asyncio.to_thread(cluster.wait_node_in_sync, leader, [topic])
        kills.append(
            {
                "node": leader,
                "partition": partition,
                "new_leader": after.leader,
                "failover_s": round(failover_s, 1),
                "back_in_sync_s": round(time.monotonic() - killed_at, 1),
            }
        )

    async def fault(load: Load) -> dict[str, Any]:
        await _during_load(load, sizes.kill_every_s, 2, act)
        return {"leader_kills": kills}

    result = await run_scenario(h, "kafka_leader_kill", sizes, fault)
    result.violations += problems
    return result


SCENARIOS["kafka_leader_kill"] = kafka_leader_kill
ONLY_ON["kafka_leader_kill"] = Transport.KAFKA
#: scenarios that run on the three-broker stack (``cluster_stack_for_reliability``)
ON_KAFKA_CLUSTER = frozenset({"kafka_leader_kill"})
