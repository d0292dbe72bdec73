"""The order saga on the Temporal dev server with the real PostgreSQL event store.

Each test runs its own worker on a fresh task queue over its own database, then
checks the streams, the stock levels (conserved) and the payment ledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey, TypedSearchAttributes
from temporalio.service import RPCError

from activities.payment import SimulatedPaymentProvider, TransientProviderError
from application.orders import start_order
from domain.commands import OrderLine, PlaceOrder
from domain.errors import InvalidCommand
from domain.events import inventory_stream, order_stream, payment_stream
from domain.saga_events import notification_stream, saga_stream
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
from workflows.client import (
    OrderNotFound,
    OrderRequestRefused,
    cancel_order,
    deliver_order,
    get_status,
    retry_compensation,
    ship_order,
)
from workflows.visibility import SAGA_STATUS, SAGA_STEP

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


def place(order_id: str, **quantities: int) -> PlaceOrder:
    """A PlaceOrder for customer c-1 with ``sku=quantity`` lines."""
    lines = [OrderLine(sku=sku, quantity=q) for sku, q in quantities.items()]
    return PlaceOrder(order_id=order_id, customer_id="c-1", lines=lines)


class BrokenRefunds(SimulatedPaymentProvider):
    """The simulator, with refunds failing until ``repaired`` (a provider outage)."""

    repaired = False

    async def refund(self, *, payment_id: str, amount_cents: int, idempotency_key: str) -> None:
        if not self.repaired:
            raise TransientProviderError("refunds are down")
        await super().refund(
            payment_id=payment_id, amount_cents=amount_cents, idempotency_key=idempotency_key
        )


async def test_happy_path_reserves_charges_creates_confirms_ships_and_delivers(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}")
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store):
        handle = await start_order(client, cfg, place(order_id, A=2, B=3), store=store)
        status = await wait_for_status(client, order_id, "awaiting_shipment")
        assert status.total_cents == 2 * 1000 + 3 * 250
        assert status.confirmation_sent
        assert await ship_order(client, order_id, "TRK-1", "DHL") == "shipped"
        assert await deliver_order(client, order_id) == "delivered"
        result = await handle.result()
    assert result.status == "delivered"
    assert await event_types(store, order_stream(order_id)) == [
        "OrderCreated", "OrderItemAdded", "OrderItemAdded", "OrderSubmitted",
        "PaymentReceived", "OrderShipped", "OrderDelivered",
    ]  # fmt: skip
    assert await event_types(store, payment_stream(order_id)) == ["PaymentCharged"]
    assert await event_types(store, saga_stream(order_id)) == [
        "SagaStarted", "SagaStepCompleted", "SagaStepCompleted", "SagaStepCompleted",
        "SagaStepCompleted", "SagaCompleted",
        # the pivot and the sales after it are flushed with the status change
        "SagaStepCompleted", "SagaStepCompleted", "SagaStepCompleted", "SagaStatusChanged",
        "SagaStepCompleted", "SagaStatusChanged",
    ]  # fmt: skip
    assert await event_types(store, notification_stream(order_id)) == ["ConfirmationSent"]
    assert (await event_types(store, inventory_stream("A")))[-2:] == ["StockReserved", "StockSold"]
    reserved = (await store.read_stream(inventory_stream("A")))[-2]
    assert reserved.metadata["workflow_id"] == order_id
    assert reserved.metadata["correlation_id"] == order_id
    figures = await check_invariants(store, STOCK, [order_id])
    assert figures["levels"] == {"A": (8, 0, 2), "B": (2, 0, 3)}
    assert figures["net_cents"] == 2750
    await record_history(handle, "order/happy_path")


async def _visible(handle: WorkflowHandle[Any, Any], status: str) -> TypedSearchAttributes:
    """The run's search attributes once visibility shows ``status`` (or after 15 s).

    Why poll: the server writes visibility from its own task queue after the workflow
    task that upserted, so a describe() right after the status query may still show
    the previous values (seen in CI on a loaded machine); the assertions that follow
    say what was visible in the end.
    """
    deadline = time.monotonic() + 15
    while True:
        attributes = (await handle.describe()).typed_search_attributes
        if attributes.get(SAGA_STATUS) == status or time.monotonic() > deadline:
            return attributes
        await asyncio.sleep(0.1)


async def test_search_attributes_are_upserted_once_per_workflow_task_and_stay_true(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}")
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store):
        handle = await start_order(client, cfg, place(order_id, A=1, B=2), store=store)
        await wait_for_status(client, order_id, "awaiting_shipment")
        waiting = await _visible(handle, "awaiting_shipment")
        assert await ship_order(client, order_id, "TRK-2", "UPS") == "shipped"
        assert await deliver_order(client, order_id) == "delivered"
        await handle.result()
        done = await _visible(handle, "delivered")
    assert waiting.get(SAGA_STATUS) == "awaiting_shipment"
    assert waiting.get(SAGA_STEP) == ""
    assert waiting.get(SearchAttributeKey.for_float("OrderTotal")) == 15.0
    assert done.get(SAGA_STATUS) == "delivered"
    kinds = await _history_kinds(handle, upserts=True)
    # One patch for the engine's generation (the SDK upserts TemporalChangeVersion
    # with it), and per workflow task at most one upsert of the saga's own.
    assert kinds.count("MARKER:core_patch") == 1, kinds
    per_task = [task.count("UPSERT:saga") for task in _tasks(kinds)]
    assert max(per_task) == 1, per_task
    # To awaiting shipment: three tasks (the charge and the confirmation between),
    # three upserts (there were six, and two for two patches).
    forward = kinds[: kinds.index("TIMER_STARTED")]
    assert forward.count("UPSERT:saga") == 3, forward


async def test_a_local_confirmation_saves_a_workflow_task_and_still_confirms(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}", saga_local_notifications=True)
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store):
        handle = await start_order(client, cfg, place(order_id, A=1), store=store)
        status = await wait_for_status(client, order_id, "awaiting_shipment")
    assert status.confirmation_sent
    assert await event_types(store, notification_stream(order_id)) == ["ConfirmationSent"]
    kinds = await _history_kinds(handle)
    forward = kinds[: kinds.index("TIMER_STARTED")]
    assert forward.count("ACTIVITY_TASK_SCHEDULED") == 1, forward  # the charge alone
    assert forward.count("WORKFLOW_TASK_COMPLETED") == 2, forward


def _tasks(kinds: list[str]) -> list[list[str]]:
    """The commands each completed workflow task recorded (events after its
    WORKFLOW_TASK_COMPLETED, up to the next task's scheduling)."""
    tasks: list[list[str]] = []
    for kind in kinds:
        if kind == "WORKFLOW_TASK_COMPLETED":
            tasks.append([])
        elif kind == "WORKFLOW_TASK_SCHEDULED":
            continue
        elif tasks:
            tasks[-1].append(kind)
    return tasks


async def test_declined_payment_releases_every_reservation(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}", payment_decline_rate=1.0)
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store):
        handle = await start_order(client, cfg, place(order_id, A=1, B=1), store=store)
        result = await handle.result()
    assert result.status == "compensated"
    assert "PaymentDeclined" in result.reason
    # Compensations in reverse: the charge (nothing to refund), then both releases.
    assert result.compensated_steps == ["charge", "reserve:B", "reserve:A"]
    assert await event_types(store, payment_stream(order_id)) == ["PaymentDeclined"]
    assert await event_types(store, order_stream(order_id)) == []
    assert (await event_types(store, saga_stream(order_id)))[-1] == "SagaCompensated"
    figures = await check_invariants(store, STOCK, [order_id])
    assert figures["levels"] == {"A": (10, 0, 0), "B": (5, 0, 0)}
    await record_history(handle, "order/payment_declined")


async def test_out_of_stock_on_the_second_line_releases_the_first_and_charges_nothing(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}")
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store):
        handle = await start_order(client, cfg, place(order_id, A=1, B=6), store=store)
        result = await handle.result()
    assert result.status == "compensated"
    assert result.reason.startswith("step reserve:B failed: OutOfStock")
    assert await event_types(store, payment_stream(order_id)) == []
    assert (await event_types(store, inventory_stream("A")))[-2:] == [
        "StockReserved",
        "StockReservationReleased",
    ]
    assert (await event_types(store, inventory_stream("B")))[-1] == "StockAdded"
    figures = await check_invariants(store, STOCK, [order_id])
    assert figures["levels"] == {"A": (10, 0, 0), "B": (5, 0, 0)}
    await record_history(handle, "order/out_of_stock_second_line")


async def test_cancel_before_shipping_refunds_cancels_and_releases(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}")
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store):
        handle = await start_order(client, cfg, place(order_id, A=3), store=store)
        await wait_for_status(client, order_id, "awaiting_shipment")
        assert await cancel_order(client, order_id, "customer changed their mind") == "compensated"
        result = await handle.result()
    assert result.compensated_steps == ["create_order", "charge", "reserve:A"]
    assert (await event_types(store, order_stream(order_id)))[-1] == "OrderCancelled"
    assert await event_types(store, payment_stream(order_id)) == [
        "PaymentCharged",
        "PaymentRefunded",
    ]
    figures = await check_invariants(store, STOCK, [order_id])
    assert figures["levels"]["A"] == (10, 0, 0)
    assert figures["net_cents"] == 0
    # The cancel's acceptance is durable before the first compensation commits: a
    # timer (the barrier) ends the task that took the update, and the releases and
    # refunds (local activities) only start in a later task.
    kinds = await _history_kinds(handle)
    accepted = kinds.index("UPDATE_ACCEPTED")
    after = kinds[accepted:]
    first_local = after.index("MARKER:core_local_activity")
    assert "TIMER_STARTED" in after[:first_local], after[:first_local]
    assert "WORKFLOW_TASK_COMPLETED" in after[after.index("TIMER_STARTED") : first_local]
    await record_history(handle, "order/cancel_before_shipping")


async def _history_kinds(handle: WorkflowHandle[Any, Any], *, upserts: bool = False) -> list[str]:
    """The history's event types (markers with their name), in order; with ``upserts``,
    an upsert is ``UPSERT:patch`` (the SDK's TemporalChangeVersion) or ``UPSERT:saga``."""
    kinds = []
    async for event in handle.fetch_history_events():
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        kind = kind.replace("WORKFLOW_EXECUTION_UPDATE_", "UPDATE_")
        if event.HasField("marker_recorded_event_attributes"):
            kind = f"MARKER:{event.marker_recorded_event_attributes.marker_name}"
        if upserts and event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes
            names = set(fields.search_attributes.indexed_fields)
            kind = "UPSERT:patch" if names == {"TemporalChangeVersion"} else "UPSERT:saga"
        kinds.append(kind)
    return kinds


async def test_cancel_after_shipping_is_refused_and_changes_nothing(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    # Why without search attributes here: after a run that upserted them, the dev
    # server keeps the (empty) workflow task of a rejected update in history, which
    # would hide what this test checks: that the validator itself commands nothing.
    cfg = fast_settings(settings, task_queue=f"q-{unique}", saga_search_attributes=False)
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store):
        handle = await start_order(client, cfg, place(order_id, B=1), store=store)
        await wait_for_status(client, order_id, "awaiting_shipment")
        await ship_order(client, order_id, "TRK-2", "UPS")
        history_before = len((await handle.fetch_history()).events)
        with pytest.raises(
            OrderRequestRefused, match=f"Order {order_id} is shipped: cannot cancel"
        ):
            await cancel_order(client, order_id, "too late")
        with pytest.raises(OrderRequestRefused, match="is shipped: cannot ship"):
            await ship_order(client, order_id, "TRK-3", "UPS")
        # Why compare history: a validator's refusal must not leave a trace.
        after = (await handle.fetch_history()).events
        assert len(after) == history_before, [e.event_type for e in after[history_before - 3 :]]
        assert (await get_status(client, order_id)).status == "shipped"
        await deliver_order(client, order_id)
        result = await handle.result()
    assert result.status == "delivered"
    assert "OrderCancelled" not in await event_types(store, order_stream(order_id))
    await check_invariants(store, STOCK, [order_id])
    await record_history(handle, "order/cancel_after_shipping_refused")


async def test_failed_compensation_is_parked_then_retried_by_update(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}")
    order_id = f"o-{unique}"
    provider = BrokenRefunds()
    async with build_worker(client, cfg, store, provider=provider):
        handle = await start_order(client, cfg, place(order_id, A=1), store=store)
        await wait_for_status(client, order_id, "awaiting_shipment")
        assert await cancel_order(client, order_id, "fraud check") == "compensation_parked"
        status = await get_status(client, order_id)
        assert [c.step for c in status.compensation_log if c.status == "parked"] == ["charge"]
        assert "refunds are down" in status.compensation_log[1].error
        assert (await event_types(store, saga_stream(order_id)))[-1] == "CompensationParked"
        # Still broken: the retry parks it again; nothing is dropped.
        assert await retry_compensation(client, order_id, "charge") == "parked"
        with pytest.raises(OrderRequestRefused, match="compensation of step 'reserve:A'"):
            await retry_compensation(client, order_id, "reserve:A")
        provider.repaired = True
        assert await retry_compensation(client, order_id, "charge", "provider back") == "done"
        result = await handle.result()
    assert result.status == "compensated"
    saga_events = await event_types(store, saga_stream(order_id))
    assert saga_events[-6:] == [
        "CompensationParked", "CompensationRetried", "CompensationParked",
        "CompensationRetried", "CompensationResolved", "SagaCompensated",
    ]  # fmt: skip
    figures = await check_invariants(store, STOCK, [order_id])
    assert figures["net_cents"] == 0
    await record_history(handle, "order/compensation_parked_then_retried")


async def test_activity_that_commits_then_fails_is_retried_without_duplicate_events(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    order_id = f"o-{unique}"
    for point in ("reserve_stock", "charge_payment", "create_order"):
        cfg = fast_settings(
            settings, task_queue=f"q-{unique}-{point}", fault_commit_then_fail=point
        )
        this_order = f"{order_id}-{point}"
        async with build_worker(client, cfg, store):
            handle = await start_order(client, cfg, place(this_order, A=1), store=store)
            await wait_for_status(client, this_order, "awaiting_shipment")
            await cancel_order(client, this_order, "done testing")
            await handle.result()
        history = await handle.fetch_history()
        attempts = [
            e.marker_recorded_event_attributes
            for e in history.events
            if e.HasField("marker_recorded_event_attributes")
        ]
        assert attempts, "expected local-activity markers"
        assert await event_types(store, order_stream(this_order)) == [
            "OrderCreated", "OrderItemAdded", "OrderSubmitted", "PaymentReceived", "OrderCancelled",
        ]  # fmt: skip
        assert await event_types(store, payment_stream(this_order)) == [
            "PaymentCharged",
            "PaymentRefunded",
        ]
        reservations = [
            e
            for e in await store.read_stream(inventory_stream("A"))
            if e.data.get("order_id") == this_order
        ]
        assert [e.event_type for e in reservations] == ["StockReserved", "StockReservationReleased"]
        if point == "reserve_stock":
            await record_history(handle, "order/commit_then_fail")
    await check_invariants(
        store,
        STOCK,
        [f"{order_id}-{p}" for p in ("reserve_stock", "charge_payment", "create_order")],
    )


async def test_requests_to_an_unknown_order_are_refused_clearly(
    client: Client, unique: str
) -> None:
    with pytest.raises(OrderNotFound, match=f"order nobody-{unique} does not exist"):
        await ship_order(client, f"nobody-{unique}", "T", "C")
    with pytest.raises(OrderNotFound):
        await get_status(client, f"nobody-{unique}")


async def test_bad_orders_are_refused_before_any_workflow_starts(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}", order_max_lines=2, order_max_units=5)
    bad = PlaceOrder(
        order_id=f"o-{unique}",
        customer_id="c-1",
        lines=[
            OrderLine(sku="A", quantity=0),
            OrderLine(sku="A", quantity=2),
            OrderLine(sku="NOPE", quantity=9),
        ],
    )
    with pytest.raises(InvalidCommand) as refused:
        await start_order(client, cfg, bad, store=store)
    # Shape problems only: the catalogue is not read for a badly shaped order.
    assert refused.value.problems == [
        "the order has 3 lines, more than max_lines 2",
        "line 0 (sku A): quantity must be positive, got 0",
        "line 1 (sku A): duplicate sku, already on line 0",
        "the order has 11 units, more than max_units 5",
    ]
    with pytest.raises(InvalidCommand) as unknown:
        await start_order(client, cfg, place(f"o-{unique}", A=1, NOPE=1), store=store)
    assert unknown.value.problems == ["line 1 (sku NOPE): unknown sku"]
    with pytest.raises(InvalidCommand, match="the order has no lines"):
        await start_order(client, cfg, place(f"o-{unique}"), store=store)
    with pytest.raises(RPCError):
        await client.get_workflow_handle(f"o-{unique}").describe()


async def test_starting_the_same_order_twice_gives_one_saga(
    client: Client, settings: Settings, store: PostgresEventStore, unique: str
) -> None:
    cfg = fast_settings(settings, task_queue=f"q-{unique}")
    order_id = f"o-{unique}"
    async with build_worker(client, cfg, store):
        first = await start_order(client, cfg, place(order_id, A=1), store=store)
        second = await start_order(client, cfg, place(order_id, A=1), store=store)
        assert second.result_run_id == first.result_run_id
        await wait_for_status(client, order_id, "awaiting_shipment")
        await cancel_order(client, order_id, "test over")
        await first.result()
        # Finished: starting again still refers to the one saga, never a new run.
        third = await start_order(client, cfg, place(order_id, A=1), store=store)
        assert (await third.describe()).run_id == first.result_run_id
    assert (await event_types(store, saga_stream(order_id))).count("SagaStarted") == 1
