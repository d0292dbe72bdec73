"""The returns saga on the Temporal dev server with the real PostgreSQL event store.

Each test delivers an order through the order saga first, then returns part of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client

from activities.notification import LoggingNotifier
from activities.payment import SimulatedPaymentProvider, TransientProviderError
from application.context import Context
from application.orders import start_order
from application.returns import ReturnRefused, open_return, receive_return
from domain.commands import OrderLine, PlaceOrder
from domain.events import inventory_stream, order_stream, payment_stream, return_stream
from domain.inventory import Inventory
from eventstore import Repository
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

STOCK = {"A": (1000, 10), "B": (250, 5)}


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[Client]:
    """A Temporal client on the session's dev server."""
    assert settings.temporal_address
    yield await Client.connect(settings.temporal_address)


@pytest.fixture
async def store(pg_store: PostgresEventStore) -> PostgresEventStore:
    """The test's event store with products A (10.00, 10 units) and B (2.50, 5 units)."""
    await stock_catalogue(pg_store, STOCK)
    return pg_store


async def deliver(client: Client, cfg: Settings, store: PostgresEventStore, order_id: str) -> None:
    """Place, ship and deliver an order of 2 A and 3 B (the worker must be running)."""
    cmd = PlaceOrder(
        order_id=order_id,
        customer_id="c-1",
        lines=[OrderLine(sku="A", quantity=2), OrderLine(sku="B", quantity=3)],
    )
    await start_order(client, cfg, cmd, store=store)
    await wait_for_status(client, order_id, "awaiting_shipment")
    await ship_order(client, order_id, "TRK-1", "DHL")
    assert await deliver_order(client, order_id) == "delivered"


async def available(store: PostgresEventStore, sku: str) -> int:
    return (await Repository(store, Inventory).load(sku)).available


async def outcome(client: Client, return_id: str) -> ReturnSagaResult:
    """The return saga's result (waits for it)."""
    handle = client.get_workflow_handle(return_id, result_type=ReturnSagaResult)
    return await handle.result()


class BrokenRefunds(SimulatedPaymentProvider):
    """Refunds always fail transiently (a provider outage)."""

    async def refund(self, *, payment_id: str, amount_cents: int, idempotency_key: str) -> None:
        raise TransientProviderError("refunds are down")


class FlakyNotifier(LoggingNotifier):
    """Fails the first ``failures`` sends."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent = 0

    async def send(self, *, recipient: str, subject: str, body: str, idempotency_key: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("mail server away")
        self.sent += 1


async def test_happy_path_opens_receives_restocks_refunds_and_notifies(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}")
    ctx = Context(cfg, store, client)
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store):
        await deliver(client, cfg, store, order_id)
        opened = await open_return(ctx, order_id, [("A", 1), ("B", 2)], "does not fit")
        status = await wait_for_status(client, opened.return_id, "awaiting_goods")
        assert status.total_cents == 1000 + 2 * 250
        assert status.keys["OrderId"] == order_id
        # The rule holds across returns: 1 A is left to return, not 2.
        with pytest.raises(ReturnRefused, match="2 units of A exceed the 1 returnable"):
            await open_return(ctx, order_id, [("A", 2)], "again")
        before = await receive_return(ctx, opened.return_id)
        assert before["result"] != "awaiting_goods"
        result = await outcome(client, opened.return_id)
    assert result.status == "completed"
    assert result.refunded_cents == 1500
    assert await event_types(store, return_stream(opened.return_id)) == [
        "ReturnOpened", "ReturnReceived", "ReturnRefunded", "ReturnCompleted",
    ]  # fmt: skip
    assert await event_types(store, payment_stream(order_id)) == [
        "PaymentCharged",
        "PaymentRefunded",
    ]
    assert (await event_types(store, order_stream(order_id)))[-1] == "OrderReturnRegistered"
    assert (await event_types(store, inventory_stream("A")))[-1] == "StockReturned"
    assert await available(store, "A") == 10 - 2 + 1
    assert await available(store, "B") == 5 - 3 + 2
    await record_history(client.get_workflow_handle(opened.return_id), "returns/happy_path")


async def test_a_return_of_an_order_not_delivered_is_refused_and_writes_nothing(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}")
    ctx = Context(cfg, store, client)
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store):
        cmd = PlaceOrder(order_id=order_id, customer_id="c", lines=[OrderLine(sku="A", quantity=1)])
        await start_order(client, cfg, cmd, store=store)
        await wait_for_status(client, order_id, "awaiting_shipment")
        events_before = await event_types(store, order_stream(order_id))
        with pytest.raises(ReturnRefused, match="only a delivered order"):
            await open_return(ctx, order_id, [("A", 1)], "changed my mind")
    assert await event_types(store, order_stream(order_id)) == events_before


async def test_refund_failing_before_commit_unstocks_and_cancels_the_return(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}", returns_refund_retry_max_attempts=2)
    ctx = Context(cfg, store, client)
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store, provider=BrokenRefunds()):
        await deliver(client, cfg, store, order_id)
        opened = await open_return(ctx, order_id, [("A", 2)], "broken")
        await wait_for_status(client, opened.return_id, "awaiting_goods")
        await receive_return(ctx, opened.return_id)
        result = await outcome(client, opened.return_id)
    assert result.status == "compensated"
    assert "refunds are down" in result.reason
    assert result.compensated_steps == ["restock:A", "open_return"]
    assert (await event_types(store, inventory_stream("A")))[-2:] == [
        "StockReturned",
        "StockReturnReversed",
    ]
    assert await available(store, "A") == 10 - 2
    assert (await event_types(store, return_stream(opened.return_id)))[-1] == "ReturnCancelled"
    assert (await event_types(store, order_stream(order_id)))[-1] == "OrderReturnReleased"
    assert await event_types(store, payment_stream(order_id)) == ["PaymentCharged"]
    await record_history(
        client.get_workflow_handle(opened.return_id), "returns/refund_failed_compensated"
    )


async def test_notify_failure_retries_forward_and_never_undoes_the_refund(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}")
    ctx = Context(cfg, store, client)
    order_id = f"o-{unique}"
    notifier = FlakyNotifier(failures=3)
    async with build_worker(client, cfg, store, notifier=notifier):
        await deliver(client, cfg, store, order_id)
        opened = await open_return(ctx, order_id, [("B", 1)], "wrong colour")
        await wait_for_status(client, opened.return_id, "awaiting_goods")
        await receive_return(ctx, opened.return_id)
        result = await outcome(client, opened.return_id)
    assert result.status == "completed"
    assert notifier.sent >= 1
    assert await event_types(store, payment_stream(order_id)) == [
        "PaymentCharged",
        "PaymentRefunded",
    ]
    assert (await event_types(store, return_stream(opened.return_id)))[-1] == "ReturnCompleted"
    assert (await event_types(store, inventory_stream("B")))[-1] == "StockReturned"
    await record_history(
        client.get_workflow_handle(opened.return_id), "returns/notify_retried_forward"
    )
