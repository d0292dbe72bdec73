"""The kits of the saga types sagaflow ships: order, returns and the tutorial trip.

Each kit says how to make an input, what to set up first (a catalogue, a delivered
order to return), how to move the saga past its waits, and what must hold in the
business afterwards (stock, money). A team's own kit looks the same: see
``docs/sagas.md``.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from application.catalogue import Catalogue
from domain.commands import RegisterProduct, Restock
from domain.inventory import Inventory
from domain.order import Order
from domain.payment import Payment
from domain.returns import Return
from eventstore import Repository
from sagaflow.testing.invariants import Observation
from sagaflow.testing.runner import NO_ARGUMENT, KitContext, SagaKit
from workflows.models import (
    ORDER_SAGA,
    LineInput,
    OrderSagaInput,
    ShipRequest,
)
from workflows.registry import UnknownSagaType
from workflows.returns_models import RETURN_SAGA, ReceiveRequest, ReturnLineInput, ReturnSagaInput
from workflows.trip_saga import TRIP_SAGA, TripInput

STOCK = {"A": (1000, 10), "B": (250, 5)}
"""The catalogue every order and returns scenario starts from: price, units."""

ORDER_LINES = {"A": 2, "B": 1}
"""What each order scenario orders."""


async def stock_catalogue(ctx: KitContext) -> None:
    """Register and stock the kit's products."""
    catalogue = Catalogue(ctx.store)
    for sku, (price, units) in STOCK.items():
        await catalogue.register_product(
            RegisterProduct(sku=sku, name=f"product {sku}", unit_price_cents=price)
        )
        await catalogue.restock(Restock(sku=sku, quantity=units))


async def stock_conserved(obs: Observation) -> None:
    """available + reserved + sold = stocked per SKU, reserved = the open reservations."""
    inventory = Repository(obs.store, Inventory)
    for sku in STOCK:
        # Every event: the sum below needs every open reservation, not the snapshot's totals.
        inv = await inventory.load(sku, use_snapshot=False)
        total = inv.available + inv.reserved + inv.sold
        assert total == inv.stocked, (
            f"{sku}: available {inv.available} + reserved {inv.reserved} + sold {inv.sold} "
            f"= {total}, stocked {inv.stocked}"
        )
        open_units = sum(r.quantity for r in inv.reservations.values())
        assert inv.reserved == open_units, f"{sku}: reserved {inv.reserved}, open {open_units}"


async def _net_and_live(obs: Observation, order_ids: list[str]) -> tuple[int, int]:
    net = live = 0
    for order_id in order_ids:
        payment = await Repository(obs.store, Payment).load(order_id)
        order = await Repository(obs.store, Order).load(order_id)
        net += payment.charged_cents - payment.refunded_cents
        if order.status not in ("new", "cancelled"):
            live += order.total_cents
    return net, live


# --- order ---------------------------------------------------------------------------


def order_input(ctx: KitContext) -> OrderSagaInput:
    """Two lines (2 A, 1 B) for customer c-kit, with the kit's settings frozen in."""
    from workflows.client import saga_options

    return OrderSagaInput(
        order_id=ctx.saga_id,
        customer_id="c-kit",
        lines=[LineInput(sku, quantity) for sku, quantity in ORDER_LINES.items()],
        options=saga_options(ctx.settings),
    )


async def charged_minus_refunded_is_live_total(obs: Observation) -> None:
    """charged - refunded = the total of the orders not cancelled."""
    net, live = await _net_and_live(obs, [obs.saga_id])
    assert net == live, f"charged - refunded = {net}, live orders total {live}"


async def order_outcome_effects(obs: Observation) -> None:
    """A compensated order holds no stock and no money; a delivered one sold its lines."""
    order = await Repository(obs.store, Order).load(obs.saga_id)
    inventory = Repository(obs.store, Inventory)
    if obs.outcome == "compensated":
        assert order.status in ("new", "cancelled"), f"order is {order.status}"
        for sku in ORDER_LINES:
            inv = await inventory.load(sku, use_snapshot=False)
            held = [r for r in inv.reservations if r.startswith(obs.saga_id)]
            assert not held, f"{sku}: reservation still open after compensation: {held}"
    elif obs.outcome == "delivered":
        assert order.status == "delivered", f"order is {order.status}"
        for sku, quantity in ORDER_LINES.items():
            inv = await inventory.load(sku)
            assert inv.sold == quantity, f"{sku}: sold {inv.sold}, ordered {quantity}"


ORDER_KIT = SagaKit(
    saga_type=ORDER_SAGA,
    make_input=order_input,
    name="order",
    setup=stock_catalogue,
    invariants=(stock_conserved, charged_minus_refunded_is_live_total, order_outcome_effects),
    advance={
        "await_shipment": lambda ctx: ShipRequest("TRK-KIT", "DHL"),
        "await_delivery": lambda ctx: NO_ARGUMENT,
    },
    completed="delivered",
)
"""The order saga's kit."""


# --- returns -------------------------------------------------------------------------

RETURNED = {"A": 1}
"""What each return scenario sends back (of the delivered order)."""


async def delivered_order(ctx: KitContext) -> None:
    """Stock the catalogue and deliver an order of 2 A and 1 B through the order saga."""
    from workflows.client import deliver_order, get_status, ship_order, start_order_saga

    await stock_catalogue(ctx)
    order_id = f"order-of-{ctx.saga_id}"
    await start_order_saga(
        ctx.client,
        ctx.settings,
        OrderSagaInput(
            order_id=order_id,
            customer_id="c-kit",
            lines=[LineInput(sku, quantity) for sku, quantity in ORDER_LINES.items()],
            options=order_input(ctx).options,
        ),
        task_queue=ctx.task_queue,
    )
    for _ in range(500):
        try:
            if (await get_status(ctx.client, order_id)).status == "awaiting_shipment":
                break
        except Exception:
            pass
        await asyncio.sleep(0.02)
    await ship_order(ctx.client, order_id, "TRK-KIT", "DHL")
    await deliver_order(ctx.client, order_id)
    ctx.data["order_id"] = order_id


def return_input(ctx: KitContext) -> ReturnSagaInput:
    """A return of 1 A of the delivered order."""
    from application.returns import return_options

    return ReturnSagaInput(
        return_id=ctx.saga_id,
        order_id=ctx.data["order_id"],
        customer_id="c-kit",
        reason="does not fit",
        lines=[ReturnLineInput(sku, quantity) for sku, quantity in RETURNED.items()],
        options=return_options(ctx.settings),
    )


async def refund_matches_return(obs: Observation) -> None:
    """A completed return refunded its lines once; any other outcome refunded nothing,
    and the order's payment is charged - refunded accordingly."""
    order_id = obs.data["order_id"]
    ret = await Repository(obs.store, Return).load(obs.saga_id)
    payment = await Repository(obs.store, Payment).load(order_id)
    order = await Repository(obs.store, Order).load(order_id)
    if obs.outcome == "completed":
        assert ret.refunded_cents == ret.total_cents > 0, (
            f"refunded {ret.refunded_cents} of a {ret.total_cents} return"
        )
    else:
        assert ret.refunded_cents == 0, f"a {obs.outcome} return refunded {ret.refunded_cents}"
    net = payment.charged_cents - payment.refunded_cents
    assert net == order.total_cents - ret.refunded_cents, (
        f"charged - refunded = {net}, order {order.total_cents} - refund {ret.refunded_cents}"
    )


async def restock_matches_return(obs: Observation) -> None:
    """Units come back to stock only for a completed return, and exactly once."""
    inventory = Repository(obs.store, Inventory)
    for sku, quantity in RETURNED.items():
        inv = await inventory.load(sku, entity=("return_id", obs.saga_id))
        restocked = inv.restocked_return(obs.saga_id)
        back = restocked.quantity if restocked is not None else 0
        want = quantity if obs.outcome == "completed" else 0
        assert back == want, f"{sku}: {back} units back in stock, expected {want} ({obs.outcome})"
        stocked = STOCK[sku][1] + want
        assert inv.stocked == stocked, f"{sku}: stocked {inv.stocked}, expected {stocked}"


RETURNS_KIT = SagaKit(
    saga_type=RETURN_SAGA,
    make_input=return_input,
    name="returns",
    setup=delivered_order,
    invariants=(stock_conserved, refund_matches_return, restock_matches_return),
    advance={"await_goods": lambda ctx: ReceiveRequest("arrived")},
    completed="completed",
)
"""The returns saga's kit (each scenario first delivers an order to return)."""


# --- trip (the tutorial) -------------------------------------------------------------


def trip_input(ctx: KitContext) -> TripInput:
    """A trip of 300 + 200 + 50.00."""
    return TripInput(
        trip_id=ctx.saga_id,
        traveler_id="t-kit",
        origin="LIS",
        destination="BER",
        depart_on="2027-05-01",
        return_on="2027-05-08",
        flight_cents=30000,
        hotel_cents=20000,
        car_cents=5000,
    )


async def trip_books_and_pays_consistently(obs: Observation) -> None:
    """Completed: three bookings held and the total charged once; otherwise every
    booking cancelled and nothing kept."""
    from activities.trip import trip_stream

    facts = [e for e in obs.events if e.stream_id == trip_stream(obs.saga_id)]
    held: Counter[str] = Counter()
    net = 0
    for fact in facts:
        if fact.event_type == "TripBookingMade":
            held[fact.data["participant"]] += 1
        elif fact.event_type == "TripBookingCancelled":
            held[fact.data["participant"]] -= 1
        elif fact.event_type == "TravelerCharged":
            net += fact.data["amount_cents"]
        elif fact.event_type == "TravelerRefunded":
            net -= fact.data["amount_cents"]
    assert all(n in (0, 1) for n in held.values()), f"bookings held: {dict(held)}"
    trip = obs.saga_input
    if obs.outcome == "completed":
        assert sum(held.values()) == 3, f"bookings held: {dict(held)}"
        assert net == trip.total_cents, f"kept {net}, trip costs {trip.total_cents}"
    elif obs.outcome == "compensated":
        assert sum(held.values()) == 0, f"bookings still held: {dict(held)}"
        assert net == 0, f"kept {net} of a compensated trip"


TRIP_KIT = SagaKit(
    saga_type=TRIP_SAGA,
    make_input=trip_input,
    name="trip",
    invariants=(trip_books_and_pays_consistently,),
)
"""The tutorial trip saga's kit."""


KITS = {kit.name: kit for kit in (ORDER_KIT, RETURNS_KIT, TRIP_KIT)}
"""Every shipped kit, by short name."""


def kit_for(name: str) -> SagaKit:
    """The kit of a saga type, by short name (``order``) or workflow type (``OrderSaga``);
    UnknownSagaType names the known ones."""
    for kit in KITS.values():
        if name in (kit.name, kit.saga_type):
            return kit
    raise UnknownSagaType(name, list(KITS))
