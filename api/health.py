"""Liveness and readiness probes of the dependencies (PostgreSQL, Temporal, Kafka)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sagaflow.clients import kafka_security
from sagaflow.settings import Settings


async def check_postgres(pool: Any) -> None:
    """Raise unless PostgreSQL answers a query."""
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")


async def check_temporal(client: Any, namespace: str) -> None:
    """Raise unless the Temporal frontend describes the namespace."""
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace), timeout=timedelta(seconds=3)
    )


async def check_kafka(settings: Settings) -> None:
    """Raise unless a Kafka broker answers a metadata request."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap or "",
        request_timeout_ms=3000,
        **kafka_security(settings),
    )
    try:
        await admin.start()
        await admin.describe_cluster()
    finally:
        await admin.close()


async def readiness(settings: Settings, pool: Any, temporal: Any) -> dict[str, str]:
    """Each dependency's state: "ok" or what is wrong."""
    checks: dict[str, Any] = {
        "postgres": check_postgres(pool),
        "temporal": check_temporal(temporal, settings.temporal_namespace)
        if temporal is not None
        else _fail("no Temporal client"),
    }
    if settings.kafka_enabled:
        checks["kafka"] = check_kafka(settings)
    results = await asyncio.gather(
        *(asyncio.wait_for(c, 5) for c in checks.values()), return_exceptions=True
    )
    return {
        name: "ok" if not isinstance(r, BaseException) else f"{type(r).__name__}: {r}"[:200]
        for name, r in zip(checks, results, strict=True)
    }


async def _fail(reason: str) -> None:
    raise RuntimeError(reason)
