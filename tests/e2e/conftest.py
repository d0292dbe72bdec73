"""End-to-end fixtures: sagaflow's processes on the session's real services."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from bench.reliability.harness import key_whose_order as harness_key_whose_order
from sagaflow.settings import Settings, load_settings
from sagaflow.stack import Stack

DECLINE_RATE = 0.5
KEY = "e2e-admin-key-0123456789"
READER = "e2e-reader-key-0123456789"
ESCALATE_AFTER_S = 3.0
"""The stack's escalation bound: small, so a parked test step escalates quickly."""


def key_whose_order(declines: bool) -> str:
    """An Idempotency-Key whose derived order id the payment simulator declines (or not)."""
    return harness_key_whose_order(declines, DECLINE_RATE)


@pytest.fixture(scope="session")
def stack(
    settings: Settings, local_services: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The sagaflow processes on the session's services, with their own database."""
    import psycopg

    assert settings.database_url
    db = f"e2e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    suffix = uuid.uuid4().hex[:8]
    outage = tmp_path_factory.mktemp("outage") / "refunds-down"
    stack_settings = load_settings(
        data_dir=tmp_path_factory.mktemp("stack"),
        database_url=settings.database_url.rsplit("/", 1)[0] + "/" + db,
        temporal_address=settings.temporal_address,
        temporal_ui_url=local_services.running["temporal"].addresses.get("ui"),
        kafka_enabled=settings.kafka_enabled,
        kafka_bootstrap=settings.kafka_bootstrap,
        api_port=0,
    )
    stack = Stack(
        stack_settings,
        extra_env={
            "SAGAFLOW_TASK_QUEUE": f"e2e-{suffix}",
            "SAGAFLOW_KAFKA_TOPIC": f"e2e-{suffix}",
            "SAGAFLOW_KAFKA_DEAD_LETTER_TOPIC": f"e2e-{suffix}.dlt",
            "SAGAFLOW_PROJECTOR_GROUP": f"e2e-{suffix}",
            "SAGAFLOW_PAYMENT_DECLINE_RATE": str(DECLINE_RATE),
            "SAGAFLOW_API_KEYS": f'{{"{KEY}": "read,write,admin", "{READER}": "read"}}',
            # The refund outage drill (absent file: refunds work) and a quick park.
            "SAGAFLOW_PAYMENT_REFUND_OUTAGE_FILE": str(outage),
            "SAGAFLOW_COMPENSATION_RETRY_MAX_ATTEMPTS": "2",
            "SAGAFLOW_SAGA_ESCALATE_AFTER_S": str(ESCALATE_AFTER_S),
        },
    )
    stack.notes.append(f"refund outage file: {outage}")
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"X-API-Key": KEY}, timeout=30
    ) as client:
        yield client


async def eventually(check: Any, within: float = 30.0) -> Any:
    """Poll ``check`` (an async callable) until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)
