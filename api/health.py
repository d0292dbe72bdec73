"""Liveness and readiness probes of the dependencies (PostgreSQL, Temporal, the broker)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sagaflow.clients import connect_rabbitmq, kafka_client_options
from sagaflow.settings import Settings, Transport


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

    admin = AIOKafkaAdminClient(**kafka_client_options(settings, request_timeout_ms=3000))
    try:
        await admin.start()
        await admin.describe_cluster()
    finally:
        await admin.close()


async def check_rabbitmq(settings: Settings) -> None:
    """Raise unless the RabbitMQ broker accepts a connection with the settings' credentials."""
    connection = await connect_rabbitmq(settings, timeout=3)
    await connection.close()


async def readiness(settings: Settings, pool: Any, temporal: Any) -> dict[str, str]:
    """Each dependency's state: "ok" or what is wrong."""
    checks: dict[str, Any] = {
        "postgres": check_postgres(pool),
        "temporal": check_temporal(temporal, settings.temporal_namespace)
        if temporal is not None
        else _fail("no Temporal client"),
    }
    if settings.transport_kind is Transport.KAFKA:
        checks["kafka"] = check_kafka(settings)
    if settings.transport_kind is Transport.RABBITMQ:
        checks["rabbitmq"] = check_rabbitmq(settings)
    results = await asyncio.gather(
        *(asyncio.wait_for(c, 5) for c in checks.values()), return_exceptions=True
    )
    return {
        name: "ok" if not isinstance(r, BaseException) else f"{type(r).__name__}: {r}"[:200]
        for name, r in zip(checks, results, strict=True)
    }


async def _fail(reason: str) -> None:
    raise RuntimeError(reason)
