"""Health (process alive), readiness (dependencies reachable) and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.container import Container
from api.deps import ContainerDep
from api.health import readiness
from api.models import ReadinessOut

router = APIRouter(tags=["health"])
log = logging.getLogger("sagaflow.api")


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/ready", response_model=ReadinessOut, responses={503: {"model": ReadinessOut}})
async def ready(c: ContainerDep) -> JSONResponse:
    """PostgreSQL, Temporal and Kafka reachable; each named when not (503)."""
    checks = await readiness(c.settings, c.pool, c.temporal)
    ok = all(v == "ok" for v in checks.values())
    body = ReadinessOut(status="ready" if ok else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def metrics(c: ContainerDep) -> Response:
    """Prometheus metrics: lags, dead letters, parked sagas, saga outcomes, backlog."""
    try:
        await refresh_gauges(c)
    except Exception as exc:  # a scrape must still answer with what it has
        log.warning("metrics refresh failed: %s", exc)
    return Response(generate_latest(c.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def refresh_gauges(c: Container) -> None:
    """Read the current figures into the gauges."""
    from projections.handlers import default_projections
    from projections.queries import parked_counts
    from projections.runner import projector_lag
    from streaming.relay import relay_lag

    m, settings = c.metrics, c.settings
    if settings.transport_kind.value != "embedded":
        relay = await relay_lag(c.store, settings.relay_name)
        m.relay_lag_events.set(relay.events)
        m.relay_lag_seconds.set(relay.seconds)
    lag = await projector_lag(c.store, settings)
    # One projector applies every read model in one transaction: one lag for all.
    for projection in default_projections():
        m.projection_lag_events.labels(projection.name).set(lag.events)
        m.projection_lag_seconds.labels(projection.name).set(lag.seconds)
    m.dead_letters.set(lag.dead_letters_open)
    async with c.pool.connection() as conn:
        cur = await conn.execute("SELECT name, value FROM projection_counters")
        counters = {name: int(value) for name, value in await cur.fetchall()}
    m.gaps_healed.set(counters.get("gaps_healed", 0))
    m.gap_events_healed.set(counters.get("gap_events_healed", 0))
    m.parked_messages.set(lag.parked)
    async with c.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT saga_type, status, count(*), "
            "coalesce(avg(extract(epoch FROM updated_at - started_at)), 0) "
            "FROM saga_outcomes GROUP BY 1, 2"
        )
        parked = 0
        for saga_type, status, count, duration in await cur.fetchall():
            m.sagas.labels(saga_type, status).set(count)
            m.saga_duration.labels(saga_type, status).set(float(duration))
            parked += count if status == "compensation_parked" else 0
    m.parked_sagas.set(parked)
    # Why clear first: a type whose inbox emptied has no row, and must read 0.
    m.parked_steps.clear()
    m.escalated_steps.clear()
    for counts in await parked_counts(c.pool):
        m.parked_steps.labels(counts.saga_type).set(counts.parked)
        m.escalated_steps.labels(counts.saga_type).set(counts.escalated)
    m.temporal_backlog.set(await c.temporal_backlog())
    m.feed_horizon_held.set((await c.store.feed_status()).horizon_held_s)
    if settings.transport_kind.value != "embedded":
        await _refresh_lease(c)


async def _refresh_lease(c: Container) -> None:
    """Which relay publishes the destination now, and how often the lease changed hands."""
    from streaming.lease import destination, lease_status

    m = c.metrics
    async with c.pool.connection() as conn:
        status = await lease_status(conn, destination(c.settings))
    # Why clear first: the previous holder's series must go when another took over.
    m.relay_leader.clear()
    if status is None:
        return
    m.relay_leader.labels(status.holder, status.destination).set(1 if status.held else 0)
    m.relay_takeovers.set(status.takeovers)
    m.relay_lease_epoch.set(status.epoch)
