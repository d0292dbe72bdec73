"""The stack the scenarios run against, and the HTTP client side of the workload.

One dedicated ``Stack`` with fixed PostgreSQL and Temporal ports: restart scenarios
stop and start those services, and the clients of the worker, relay, projector and
API reconnect only when the address stays the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from eventstore.postgres import PostgresEventStore
from sagaflow.services.base import free_port, stop_process
from sagaflow.settings import DEV_API_KEY, Settings, load_settings
from sagaflow.stack import Stack, fleet_names

#: Saga statuses where a saga is done or waits for people (shipping, an operator).
SETTLED = frozenset(
    {"awaiting_shipment", "compensated", "compensation_parked", "shipped", "delivered"}
)
#: Worker settings of the reliability stack: declines and transient provider errors
#: make compensations and activity retries part of every scenario.
DECLINE_RATE = 0.15
TRANSIENT_ERROR_RATE = 0.1


def stack_for_reliability(
    data_dir: Path, extra_env: dict[str, str] | None = None, *, transport: str = "kafka"
) -> Stack:
    """A Stack (not started) whose PostgreSQL, Temporal and broker keep their ports on
    restart; ``transport`` is ``kafka`` or ``rabbitmq``."""
    if transport not in ("kafka", "rabbitmq"):
        raise ValueError(f"the reliability stack runs on kafka or rabbitmq, not {transport!r}")
    ports: set[int] = set()
    while len(ports) < 7:
        ports.add(free_port())
    pg, temporal, ui, kafka, controller, amqp, dist = sorted(ports)
    # Why the broker's ports too: with 0 a restarted broker takes new ports, and the
    # relay and projector keep dialling the old address.
    settings = load_settings(
        data_dir=data_dir,
        postgres_port=pg,
        temporal_port=temporal,
        temporal_ui_port=ui,
        kafka_port=kafka,
        kafka_controller_port=controller,
        rabbitmq_port=amqp,
        rabbitmq_dist_port=dist,
        api_port=0,
        transport=transport,
    )
    env = {
        "SAGAFLOW_PAYMENT_DECLINE_RATE": str(DECLINE_RATE),
        "SAGAFLOW_PAYMENT_TRANSIENT_ERROR_RATE": str(TRANSIENT_ERROR_RATE),
        # Why short retries: a killed worker's activities are retried by Temporal; the
        # default 30 s cap on backoff would dominate the recovery time we measure.
        "SAGAFLOW_ACTIVITY_RETRY_MAX_INTERVAL_S": "2",
        "SAGAFLOW_ACTIVITY_RETRY_MAX_ATTEMPTS": "20",
        **(extra_env or {}),
    }
    return Stack(settings, extra_env=env)


@dataclass
class Harness:
    """A started stack plus what the scenarios need to drive and observe it."""

    stack: Stack
    api_key: str = DEV_API_KEY
    #: the projector and relay settings as the processes see them
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        env = self.stack.env
        wanted = {
            "database_url": env.get("SAGAFLOW_DATABASE_URL"),
            "temporal_address": env.get("SAGAFLOW_TEMPORAL_ADDRESS"),
            "kafka_bootstrap": env.get("SAGAFLOW_KAFKA_BOOTSTRAP"),
            "rabbitmq_url": env.get("SAGAFLOW_RABBITMQ_URL"),
            "transport": env.get("SAGAFLOW_TRANSPORT", "kafka"),
            "data_dir": self.stack.settings.data_dir,
        }
        for name in (
            "kafka_topic",
            "rabbitmq_exchange",
            "relay_name",
            "projector_group",
            "task_queue",
        ):
            value = env.get(f"SAGAFLOW_{name.upper()}")
            if value:
                wanted[name] = value
        self.settings = load_settings(**{k: v for k, v in wanted.items() if v is not None})

    @property
    def database_url(self) -> str:
        """The stack's database URL."""
        assert self.settings.database_url
        return self.settings.database_url

    def http(self, max_connections: int = 64, timeout_s: float = 30.0) -> httpx.AsyncClient:
        """An API client with the admin key."""
        return httpx.AsyncClient(
            base_url=self.stack.api_url,
            headers={"X-API-Key": self.api_key},
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
        )

    async def store(self) -> PostgresEventStore:
        """A fresh event-store connection (the caller closes it).

        Why fresh each time: after a PostgreSQL restart a long-lived pool would
        first hand out dead connections.
        """
        return await PostgresEventStore.connect(
            self.database_url, migrate=False, min_size=1, max_size=4
        )

    def restart_process(self, name: str, env: dict[str, str] | None = None) -> None:
        """Stop one sagaflow process gracefully and start it again (with ``env`` added)."""
        proc = self.stack.procs.get(name)
        if proc is not None and proc.poll() is None:
            # Graceful (the worker drains for up to its shutdown bound), then SIGKILL.
            stop_process(proc.pid, sig=signal.SIGTERM, timeout_s=45)
            proc.wait(timeout=10)
        if env is not None:
            self.stack.env.update(env)
        self.stack.start_process(name)

    @contextlib.contextmanager
    def fleet(self, kind: str, count: int) -> Iterator[list[str]]:
        """Run ``count`` processes of ``kind`` (``worker`` on the one task queue,
        ``projector`` in the one group) for the block: the copies missing are started
        and, on exit, stopped gracefully, so the shared stack is left as it was."""
        names = fleet_names(kind, count)
        extra = [name for name in names if not self.process_alive(name)]
        for name in extra:
            self.stack.start_process(name)
        try:
            yield names
        finally:
            for name in extra:
                proc = self.stack.procs.pop(name, None)
                if proc is not None and proc.poll() is None:
                    stop_process(proc.pid, sig=signal.SIGTERM, timeout_s=45)
                    proc.wait(timeout=10)

    def process_alive(self, name: str) -> bool:
        """Whether the named sagaflow process runs."""
        proc = self.stack.procs.get(name)
        return proc is not None and proc.poll() is None


@contextlib.contextmanager
def started(stack: Stack) -> Iterator[Harness]:
    """Start ``stack``; stop every process and service it started on exit."""
    try:
        stack.start()
        yield Harness(stack)
    finally:
        stack.stop()


# --- HTTP with retries ----------------------------------------------------------------

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


async def request_with_retry(
    call: Callable[[], Awaitable[httpx.Response]],
    *,
    within_s: float,
    pause_s: float = 0.25,
) -> httpx.Response | None:
    """Run ``call`` until it answers with a final status or ``within_s`` runs out.

    Why retry at all: during a fault the API answers 5xx or the connection drops,
    and a real client retries; with the same Idempotency-Key that must be safe.
    Returns the last response, or None when no attempt got an answer.
    """
    deadline = time.monotonic() + within_s
    last: httpx.Response | None = None
    attempt = 0
    while True:
        attempt += 1
        try:
            last = await call()
            if last.status_code not in RETRYABLE_STATUS:
                return last
        except (httpx.TransportError, httpx.TimeoutException):
            pass
        if time.monotonic() + pause_s > deadline:
            return last
        await asyncio.sleep(min(pause_s * attempt, 2.0))


async def register_products(
    http: httpx.AsyncClient, skus: list[str], stock: int, *, within_s: float = 60
) -> None:
    """Register and stock each SKU (price 1000 + index cents); raise when refused."""
    for index, sku in enumerate(skus):
        created = await request_with_retry(
            lambda sku=sku, i=index: http.post(  # type: ignore[misc]
                "/products", json={"sku": sku, "name": f"Item {sku}", "unit_price_cents": 1000 + i}
            ),
            within_s=within_s,
        )
        if created is None or created.status_code not in (201, 409):
            raise RuntimeError(f"cannot register {sku}: {created and created.text}")
        key = f"stock-{sku}-{uuid.uuid4().hex}"
        stocked = await request_with_retry(
            lambda sku=sku, key=key: http.post(  # type: ignore[misc]
                f"/products/{sku}/restock",
                json={"quantity": stock},
                headers={"Idempotency-Key": key},
            ),
            within_s=within_s,
        )
        if stocked is None or stocked.status_code != 200:
            raise RuntimeError(f"cannot restock {sku}: {stocked and stocked.text}")


def order_body(rng: random.Random, customer: str, skus: list[str]) -> dict[str, Any]:
    """One to two lines of the scenario's SKUs, one to three units each."""
    lines = rng.sample(skus, min(len(skus), rng.randint(1, 2)))
    return {
        "customer_id": customer,
        "lines": [{"sku": sku, "quantity": rng.randint(1, 3)} for sku in lines],
    }


_ORDER_IN_VIOLATION = re.compile(r"order ([0-9a-f]{8}-[0-9a-f-]{27})")


async def temporal_diagnosis(h: Harness, violations: list[str], most: int = 3) -> list[str]:
    """What Temporal and the worker log say about the first ``most`` orders named in
    ``violations``: the run's status, its pending workflow task (state, attempt,
    times), pending activities, its last history events, and the worker's log lines
    naming it. Why: a saga stuck after a fault is otherwise a one-line mystery once
    the stack's folder is gone (a CI run keeps only the test's output)."""
    from temporalio.api.enums.v1 import EventType

    from sagaflow.clients import connect_temporal

    ids = list(dict.fromkeys(_ORDER_IN_VIOLATION.findall("\n".join(violations))))[:most]
    if not ids:
        return []
    lines: list[str] = []
    # every worker of a fleet logs to its own file (worker.log, worker-2.log, ...)
    log_text = "\n".join(
        log.read_text(errors="replace") for log in sorted(h.stack.log_dir().glob("worker*.log"))
    )
    try:
        client = await connect_temporal(h.settings)
    except Exception as exc:  # a diagnosis must never hide the violation itself
        return [f"temporal diagnosis: no client ({exc!r})"]
    for wid in ids:
        try:
            handle = client.get_workflow_handle(wid)
            raw = (await handle.describe()).raw_description
            wft = raw.pending_workflow_task

            def at(name: str, wft: Any = wft) -> str:
                return getattr(wft, name).ToJsonString() if wft.HasField(name) else "-"

            lines.append(
                f"temporal {wid}: status {raw.workflow_execution_info.status}, pending "
                f"workflow task state {wft.state} attempt {wft.attempt} scheduled "
                f"{at('scheduled_time')} started {at('started_time')}, pending activities "
                f"{[a.activity_type.name for a in raw.pending_activities]}"
            )
            events = [e async for e in handle.fetch_history_events()]
            tail = ", ".join(
                f"{e.event_id}:{EventType.Name(e.event_type).removeprefix('EVENT_TYPE_')}"
                f"@{e.event_time.ToJsonString()[11:23]}"
                for e in events[-10:]
            )
            lines.append(f"  history ({len(events)} events) ends: {tail}")
        except Exception as exc:
            lines.append(f"temporal {wid}: describe failed ({exc!r})")
        mentions = [line for line in log_text.splitlines() if wid in line][-8:]
        lines += [f"  worker.log: {line[:300]}" for line in mentions]
    return lines


def key_whose_order(declines: bool, rate: float = DECLINE_RATE) -> str:
    """An Idempotency-Key whose derived order id the payment simulator, declining at
    ``rate``, declines (or not): a test that needs the charge to go through must not
    depend on the draw of a random order id."""
    from activities.payment import draw
    from application.orders import IDEMPOTENCY_NAMESPACE

    while True:
        key = uuid.uuid4().hex
        order_id = str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, key))
        if (draw(order_id, "decline") < rate) == declines:
            return key


# --- relay replicas (relay_failover) ----------------------------------------------------


def start_relay_replica(h: Harness, name: str) -> None:
    """Another ``sagaflow relay`` beside the stack's, known as ``name`` in the stack's
    processes and (``SAGAFLOW_RELAY_ID``) in the lease; stopped with the stack."""
    import sys

    from sagaflow.services.base import spawn

    env = {**h.stack.env, "SAGAFLOW_RELAY_ID": name}
    argv = [sys.executable, "-m", "sagaflow.cli", "relay"]
    h.stack.procs[name] = spawn(argv, log_file=h.stack.log_dir() / f"{name}.log", env=env)


def stop_relay_replica(h: Harness, name: str) -> None:
    """Stop a replica started by ``start_relay_replica`` (SIGTERM: it gives its lease up)."""
    proc = h.stack.procs.pop(name, None)
    if proc is not None and proc.poll() is None:
        stop_process(proc.pid, sig=signal.SIGTERM, timeout_s=30)
        proc.wait(timeout=10)


# --- the three-broker Kafka cluster (kafka_leader_kill) ---------------------------------


def cluster_stack_for_reliability(data_dir: Path, extra_env: dict[str, str] | None = None) -> Stack:
    """``stack_for_reliability`` on Kafka with three brokers (SAGAFLOW_KAFKA_BROKERS=3).

    Why the brokers' ports are left free (0): node 1's fixed port would put nodes 2
    and 3 on the next two, which another fixed port may hold; the cluster keeps the
    ports it chose in its ports.json, so a restarted node comes back on its own."""
    stack = stack_for_reliability(data_dir, extra_env)
    stack.settings = stack.settings.model_copy(
        update={"kafka_brokers": 3, "kafka_port": 0, "kafka_controller_port": 0}
    )
    return stack
