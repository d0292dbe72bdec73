"""Durable timers on the time-skipping test server, with the real event store.

The ship deadline is days long; the test server skips time whenever the workflow
only waits, so these sagas wait days in well under a second of wall time.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from application.orders import start_order
from domain.commands import OrderLine, PlaceOrder
from domain.events import order_stream, payment_stream
from eventstore.postgres import PostgresEventStore
from sagaflow.settings import Settings
from tests.replay.saga_fixtures import (
    check_invariants,
    event_types,
    fast_settings,
    record_history,
    stock_catalogue,
    wait_for_status,
)
from worker import build_worker
from workflows.client import deliver_order, ship_order

pytestmark = pytest.mark.integration

STOCK = {"A": (1000, 10)}
DAY = 86400.0


@pytest.fixture
def env(time_skipping_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """The session's time-skipping test server (tests/conftest.py)."""
    return time_skipping_env


async def test_ship_deadline_expiry_cancels_refunds_and_releases(
    env: WorkflowEnvironment, settings: Settings, pg_store: PostgresEventStore, unique: str
) -> None:
    await stock_catalogue(pg_store, STOCK)
    cfg = fast_settings(
        settings,
        task_queue=f"q-{unique}",
        saga_ship_deadline_s=3 * DAY,
        # the time-skipping server has no custom search attributes
        saga_search_attributes=False,
    )
    order_id = f"o-{unique}"
    cmd = PlaceOrder(order_id=order_id, customer_id="c", lines=[OrderLine(sku="A", quantity=4)])
    started = time.monotonic()
    async with build_worker(env.client, cfg, pg_store):
        handle = await start_order(env.client, cfg, cmd, store=pg_store)
        result = await handle.result()
    assert time.monotonic() - started < 30
    assert result.status == "compensated"
    assert result.reason == "ship deadline passed"
    assert result.compensated_steps == ["create_order", "charge", "reserve:A"]
    assert (await event_types(pg_store, order_stream(order_id)))[-1] == "OrderCancelled"
    assert await event_types(pg_store, payment_stream(order_id)) == [
        "PaymentCharged",
        "PaymentRefunded",
    ]
    figures = await check_invariants(pg_store, STOCK, [order_id])
    assert figures["levels"]["A"] == (10, 0, 0)
    await record_history(handle, "order/ship_deadline_expired")


async def test_saga_waiting_days_for_shipment_completes_in_seconds(
    env: WorkflowEnvironment, settings: Settings, pg_store: PostgresEventStore, unique: str
) -> None:
    await stock_catalogue(pg_store, STOCK)
    cfg = fast_settings(
        settings,
        task_queue=f"q-{unique}",
        saga_ship_deadline_s=7 * DAY,
        # the time-skipping server has no custom search attributes
        saga_search_attributes=False,
    )
    order_id = f"o-{unique}"
    cmd = PlaceOrder(order_id=order_id, customer_id="c", lines=[OrderLine(sku="A", quantity=1)])
    started = time.monotonic()
    async with build_worker(env.client, cfg, pg_store):
        handle = await start_order(env.client, cfg, cmd, store=pg_store)
        await wait_for_status(env.client, order_id, "awaiting_shipment")
        before = await env.get_current_time()
        await env.sleep(timedelta(days=6))
        assert await env.get_current_time() - before >= timedelta(days=6)
        assert await ship_order(env.client, order_id, "TRK", "DHL") == "shipped"
        await env.sleep(timedelta(days=2))
        assert await deliver_order(env.client, order_id) == "delivered"
        result = await handle.result()
    assert result.status == "delivered"
    assert time.monotonic() - started < 30
    await check_invariants(pg_store, STOCK, [order_id])
