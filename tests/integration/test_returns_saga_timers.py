"""The returns saga's receive deadline on the time-skipping test server: a return whose
goods never arrive expires after days of saga time, in seconds of test time."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from temporalio.testing import WorkflowEnvironment

from application.context import Context
from application.orders import start_order
from application.returns import open_return
from domain.commands import OrderLine, PlaceOrder
from domain.events import order_stream, return_stream
from eventstore.postgres import PostgresEventStore
from sagaflow.settings import Settings
from tests.replay.saga_fixtures import (
    event_types,
    fast_settings,
    record_history,
    stock_catalogue,
    wait_for_status,
)
from worker import build_worker
from workflows.client import deliver_order, ship_order
from workflows.returns_models import ReturnSagaResult

pytestmark = pytest.mark.integration

DAY = 86400.0


@pytest.fixture
def env(time_skipping_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """The session's time-skipping test server (tests/conftest.py)."""
    return time_skipping_env


async def test_a_return_whose_goods_never_arrive_expires_and_releases_its_units(
    env: WorkflowEnvironment, settings: Settings, pg_store: PostgresEventStore, unique: str
) -> None:
    await stock_catalogue(pg_store, {"A": (1000, 10)})
    cfg = fast_settings(
        settings,
        task_queue=f"q-{unique}",
        returns_receive_deadline_s=14 * DAY,
        # the time-skipping server has no custom search attributes
        saga_search_attributes=False,
    )
    client = env.client
    order_id = f"o-{unique}"
    cmd = PlaceOrder(order_id=order_id, customer_id="c", lines=[OrderLine(sku="A", quantity=3)])
    started = time.monotonic()
    async with build_worker(client, cfg, pg_store):
        await start_order(client, cfg, cmd, store=pg_store)
        await wait_for_status(client, order_id, "awaiting_shipment")
        await ship_order(client, order_id, "TRK", "UPS")
        await deliver_order(client, order_id)
        opened = await open_return(Context(cfg, pg_store, client), order_id, [("A", 2)], "late")
        handle = client.get_workflow_handle(opened.return_id, result_type=ReturnSagaResult)
        # Why sleep: only handles from start_workflow skip time on their own.
        await env.sleep(timedelta(days=15))
        result = await handle.result()
    assert time.monotonic() - started < 60
    assert result.status == "expired"
    assert result.reason == "receive deadline passed"
    assert result.compensated_steps == ["open_return"]
    assert await event_types(pg_store, return_stream(opened.return_id)) == [
        "ReturnOpened",
        "ReturnExpired",
    ]
    assert (await event_types(pg_store, order_stream(order_id)))[-2:] == [
        "OrderReturnRegistered",
        "OrderReturnReleased",
    ]
    await record_history(handle, "returns/receive_deadline_expired")
