"""Activities against the in-memory event store: idempotent retries, business
failures, the simulated payment provider's reproducible decisions."""

from __future__ import annotations

import dataclasses

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities._support import CommitThenFail, FaultInjector
from activities.inventory import InventoryActivities
from activities.order import OrderActivities
from activities.payment import PaymentActivities, SimulatedPaymentProvider, draw
from activities.saga_journal import SagaJournalActivities
from application.catalogue import Catalogue
from application.orders import saga_started_token
from domain.commands import RegisterProduct, Restock
from domain.events import inventory_stream, order_stream, payment_stream
from domain.saga_events import saga_stream
from eventstore import InMemoryEventStore
from workflows.models import (
    CancelOrder,
    ChargePayment,
    CreateOrder,
    PricedLine,
    RefundPayment,
    ReleaseStock,
    ReserveStock,
    SagaRecord,
    StepContext,
)


@pytest.fixture
async def store() -> InMemoryEventStore:
    """A store with SKU A (5.00, 3 units)."""
    store = InMemoryEventStore()
    catalogue = Catalogue(store)
    await catalogue.register_product(RegisterProduct(sku="A", name="Apple", unit_price_cents=500))
    await catalogue.restock(Restock(sku="A", quantity=3))
    return store


def ctx(step: str) -> StepContext:
    return StepContext(workflow_id="o-1", step=step, customer_id="c-1")


def reserve(quantity: int = 2) -> ReserveStock:
    return ReserveStock(ctx("reserve:A"), "o-1", "A", quantity, "o-1/A")


async def types(store: InMemoryEventStore, stream: str) -> list[str]:
    return [e.event_type for e in await store.read_stream(stream)]


async def test_reserve_prices_the_line_from_the_catalogue(store: InMemoryEventStore) -> None:
    reserved = await ActivityEnvironment().run(InventoryActivities(store).reserve_stock, reserve())
    assert (reserved.name, reserved.unit_price_cents, reserved.quantity) == ("Apple", 500, 2)


async def test_reserve_that_committed_then_failed_is_retried_without_a_second_event(
    store: InMemoryEventStore,
) -> None:
    acts = InventoryActivities(store, faults=FaultInjector("reserve_stock"))
    env = ActivityEnvironment()
    with pytest.raises(CommitThenFail):
        await env.run(acts.reserve_stock, reserve())
    env.info = dataclasses.replace(env.info, attempt=2)
    await env.run(acts.reserve_stock, reserve())
    assert await types(store, inventory_stream("A")) == [
        "ProductRegistered",
        "StockAdded",
        "StockReserved",
    ]


async def test_reserving_more_than_available_is_a_non_retryable_out_of_stock(
    store: InMemoryEventStore,
) -> None:
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(InventoryActivities(store).reserve_stock, reserve(4))
    assert refused.value.type == "OutOfStock"
    assert refused.value.non_retryable


async def test_release_of_a_reservation_never_made_is_a_no_op(store: InMemoryEventStore) -> None:
    released = await ActivityEnvironment().run(
        InventoryActivities(store).release_stock, ReleaseStock(ctx("release:A"), "A", "o-1/A")
    )
    assert released is False
    assert "StockReservationReleased" not in await types(store, inventory_stream("A"))


async def test_charge_refund_and_order_steps_are_idempotent(store: InMemoryEventStore) -> None:
    env = ActivityEnvironment()
    payments = PaymentActivities(store, SimulatedPaymentProvider())
    orders = OrderActivities(store)
    charge = ChargePayment(ctx("charge"), "o-1", 1000, "charge-o-1")
    first = await env.run(payments.charge_payment, charge)
    assert await env.run(payments.charge_payment, charge) == first
    create = CreateOrder(
        ctx("create_order"),
        "o-1",
        "c-1",
        [PricedLine("A", "Apple", 2, 500)],
        first.payment_id,
        1000,
    )
    await env.run(orders.create_order, create)
    await env.run(orders.create_order, create)
    cancel = CancelOrder(ctx("cancel_order"), "o-1", "test")
    await env.run(orders.cancel_order, cancel)
    await env.run(orders.cancel_order, cancel)
    refund = RefundPayment(ctx("refund"), "o-1", "test")
    assert await env.run(payments.refund_payment, refund) == 1000
    assert await env.run(payments.refund_payment, refund) == 0
    assert await types(store, payment_stream("o-1")) == ["PaymentCharged", "PaymentRefunded"]
    assert await types(store, order_stream("o-1")) == [
        "OrderCreated", "OrderItemAdded", "OrderSubmitted", "PaymentReceived", "OrderCancelled",
    ]  # fmt: skip


async def test_journal_append_retried_with_the_same_sequence_writes_once(
    store: InMemoryEventStore,
) -> None:
    journal = SagaJournalActivities(store)
    record = SagaRecord(saga_id="o-1", saga_type="OrderSaga", kind="SagaStarted", seq=1)
    await ActivityEnvironment().run(journal.record_saga_events, [record])
    await ActivityEnvironment().run(journal.record_saga_events, [record])
    assert await types(store, saga_stream("o-1")) == ["SagaStarted"]


def _journal_env(workflow_id: str) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id)
    return env


@pytest.mark.parametrize("api_first", [True, False], ids=["api-first", "journal-first"])
async def test_a_buffered_saga_started_is_written_once_whoever_is_first(
    store: InMemoryEventStore, api_first: bool
) -> None:
    """Engine 3 sends SagaStarted with the journal's first write; the API appends it
    alone. Either order leaves one SagaStarted, first, and no partial duplicate."""
    journal = SagaJournalActivities(store)
    started = SagaRecord(saga_id="o-1", saga_type="OrderSaga", kind="SagaStarted", seq=1)
    step = SagaRecord(
        saga_id="o-1", saga_type="OrderSaga", kind="SagaStepCompleted", seq=2, step="reserve:A"
    )
    completed = SagaRecord(
        saga_id="o-1", saga_type="OrderSaga", kind="SagaCompleted", seq=3, status="done"
    )
    if api_first:
        await saga_started_token(store, saga_id="o-1", saga_type="OrderSaga", keys={})
    await _journal_env("o-1").run(journal.record_saga_events, [started, step, completed])
    # A retry of the same batch (its first try committed) writes nothing.
    await _journal_env("o-1").run(journal.record_saga_events, [started, step, completed])
    if not api_first:
        await saga_started_token(store, saga_id="o-1", saga_type="OrderSaga", keys={})
    assert await types(store, saga_stream("o-1")) == [
        "SagaStarted", "SagaStepCompleted", "SagaCompleted",
    ]  # fmt: skip


def test_simulated_decisions_are_reproducible_from_the_order_id() -> None:
    provider = SimulatedPaymentProvider(decline_rate=0.5)
    decisions = [provider.will_decline(f"o-{n}") for n in range(200)]
    again = SimulatedPaymentProvider(decline_rate=0.5)
    assert decisions == [again.will_decline(f"o-{n}") for n in range(200)]
    assert 60 < sum(decisions) < 140
    assert draw("o-1", "decline") == draw("o-1", "decline") != draw("o-2", "decline")


async def test_simulated_declines_are_recorded_and_raised_as_payment_declined(
    store: InMemoryEventStore,
) -> None:
    payments = PaymentActivities(store, SimulatedPaymentProvider(decline_rate=1.0))
    with pytest.raises(ApplicationError) as declined:
        await ActivityEnvironment().run(
            payments.charge_payment, ChargePayment(ctx("charge"), "o-1", 1000, "k")
        )
    assert declined.value.type == "PaymentDeclined"
    assert await types(store, payment_stream("o-1")) == ["PaymentDeclined"]
