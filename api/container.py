"""The API process's dependencies, built once in the lifespan (never at import time)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from api.auth import KeyRing
from api.coalesce import Coalescer
from api.errors import ApiError
from application import Context
from eventstore.postgres import PostgresEventStore
from projections import queries
from sagaflow.settings import Settings

log = logging.getLogger("sagaflow.api")


@dataclass
class Metrics:
    """The API's Prometheus registry: gauges refreshed on scrape, counters as things happen."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.orders_accepted = Counter("sagaflow_orders_accepted", "orders accepted", registry=r)
        self.orders_throttled = Counter(
            "sagaflow_orders_throttled", "orders refused with 429 (backpressure)", registry=r
        )
        self.relay_lag_events = Gauge(
            "sagaflow_relay_lag_events", "events not yet confirmed by the transport", registry=r
        )
        self.relay_lag_seconds = Gauge(
            "sagaflow_relay_lag_seconds", "age of the oldest unpublished event", registry=r
        )
        self.relay_leader = Gauge(
            "sagaflow_relay_leader",
            "1 for the relay holding the destination's lease (0: the last holder, lease free)",
            ["relay_id", "destination"],
            registry=r,
        )
        self.relay_takeovers = Gauge(
            "sagaflow_relay_takeovers_total",
            "times another relay took the destination's lease over (from relay_leases)",
            registry=r,
        )
        self.relay_lease_epoch = Gauge(
            "sagaflow_relay_lease_epoch",
            "the lease's fencing epoch (one more on every acquisition)",
            registry=r,
        )
        self.projection_lag_events = Gauge(
            "sagaflow_projection_lag_events", "events not yet applied", ["read_model"], registry=r
        )
        self.projection_lag_seconds = Gauge(
            "sagaflow_projection_lag_seconds",
            "age of the oldest unapplied event",
            ["read_model"],
            registry=r,
        )
        self.dead_letters = Gauge("sagaflow_dead_letters_open", "open dead letters", registry=r)
        self.gaps_healed = Gauge(
            "sagaflow_projection_gaps_healed_total",
            "version gaps closed by reading the missing events from the store",
            registry=r,
        )
        self.gap_events_healed = Gauge(
            "sagaflow_projection_gap_events_healed_total",
            "events read from the store to close version gaps",
            registry=r,
        )
        self.parked_messages = Gauge(
            "sagaflow_parked_messages", "messages held behind a dead letter", registry=r
        )
        self.sagas = Gauge(
            "sagaflow_sagas", "sagas by outcome", ["saga_type", "status"], registry=r
        )
        self.saga_duration = Gauge(
            "sagaflow_saga_duration_seconds_avg",
            "mean time from start to last change, by outcome",
            ["saga_type", "status"],
            registry=r,
        )
        self.parked_sagas = Gauge(
            "sagaflow_parked_sagas", "sagas waiting for an operator", registry=r
        )
        self.parked_steps = Gauge(
            "sagaflow_parked_steps",
            "steps parked for an operator (the inbox), by saga type",
            ["saga_type"],
            registry=r,
        )
        self.escalated_steps = Gauge(
            "sagaflow_escalated_steps",
            "parked steps past the escalation bound (saga_escalate_after_s), by saga type",
            ["saga_type"],
            registry=r,
        )
        self.temporal_backlog = Gauge(
            "sagaflow_temporal_task_queue_backlog",
            "approximate workflow task backlog of the task queue",
            registry=r,
        )
        self.feed_horizon_held = Gauge(
            "sagaflow_feed_horizon_held_seconds",
            "how long an open transaction has held back the event feed",
            registry=r,
        )


@dataclass
class Lags:
    """The last measured lags (cached briefly: backpressure checks run per request)."""

    relay_events: int = 0
    projection_events: int = 0
    temporal_backlog: int = 0
    measured_at: float = 0.0


class Backpressure:
    """Refuses new orders (429) while the pipeline is further behind than its bounds."""

    def __init__(self, container: Container) -> None:
        self.c = container
        self.lags = Lags()
        self._lock = asyncio.Lock()

    async def refresh(self, max_age_s: float = 1.0) -> Lags:
        """Measure the lags unless measured in the last ``max_age_s`` seconds."""
        async with self._lock:
            if time.monotonic() - self.lags.measured_at < max_age_s:
                return self.lags
            from projections.runner import projector_lag
            from streaming.relay import relay_lag

            settings = self.c.settings
            try:
                projection = await projector_lag(self.c.store, settings)
                relay = (
                    await relay_lag(self.c.store, settings.relay_name)
                    if settings.transport_kind.value != "embedded"
                    else None
                )
            except Exception as exc:  # a lag we cannot measure must not fail orders
                log.warning("could not measure lag: %s", exc)
                self.lags.measured_at = time.monotonic()
                return self.lags
            self.lags = Lags(
                relay_events=relay.events if relay else 0,
                projection_events=projection.events,
                temporal_backlog=await self.c.temporal_backlog(),
                measured_at=time.monotonic(),
            )
            return self.lags

    async def check(self) -> None:
        """Raise 429 with Retry-After when a bound is exceeded."""
        s = self.c.settings
        lags = await self.refresh()
        reasons = []
        if lags.relay_events > s.backpressure_relay_lag_events:
            reasons.append(f"the relay is {lags.relay_events} events behind")
        if lags.projection_events > s.projection_lag_max_events:
            reasons.append(f"the projections are {lags.projection_events} events behind")
        if lags.temporal_backlog > s.backpressure_temporal_backlog:
            reasons.append(f"the Temporal backlog is {lags.temporal_backlog} tasks")
        if reasons:
            self.c.metrics.orders_throttled.inc()
            raise ApiError(
                429,
                "too busy",
                "; ".join(reasons) + ": retry later",
                headers={"Retry-After": str(s.backpressure_retry_after_s)},
            )


class Container:
    """One API process: the use cases' context, keys, metrics, backpressure and the
    coalesced order-summary reader."""

    def __init__(self, settings: Settings, store: PostgresEventStore, temporal: Any) -> None:
        self.settings = settings
        self.store = store
        self.pool = store.pool
        self.temporal = temporal
        self.ctx = Context(settings, store, temporal)
        self.keys = KeyRing(settings)
        self.metrics = Metrics()
        self.backpressure = Backpressure(self)
        # The hottest read: concurrent summary reads share one query per loop turn.
        self.summaries: Coalescer[str, str] = Coalescer(
            lambda order_ids: queries.order_summaries_json(self.pool, order_ids)
        )

    async def temporal_backlog(self) -> int:
        """Approximate backlog of the task queue's workflow tasks (0 when unknown)."""
        if self.temporal is None:
            return 0
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        try:
            resp = await self.temporal.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.settings.temporal_namespace,
                    task_queue=TaskQueue(name=self.settings.task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                    report_stats=True,
                )
            )
        except Exception as exc:
            log.debug("describe_task_queue failed: %s", exc)
            return 0
        return int(resp.stats.approximate_backlog_count) if resp.HasField("stats") else 0
