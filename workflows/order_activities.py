"""Contracts of the order saga's activities: typed references for the workflow.

The workflow schedules activities by these stubs (name, argument and result types);
the implementations live in ``activities/`` under the same names and are
registered by the worker. Why stubs: workflow code imports nothing from
``activities/`` (which imports the event store and psycopg), and a compensation
stays a typed reference, never a string. ``tests/unit`` checks that every stub has
an implementation with the same name.
"""

from __future__ import annotations

from temporalio import activity

from workflows.models import (
    CancelOrder,
    Charged,
    ChargePayment,
    CreateOrder,
    DeliverOrderInput,
    RefundPayment,
    ReleaseStock,
    Reserved,
    ReserveStock,
    SellStock,
    SendConfirmation,
    ShipOrderInput,
)

_IMPLEMENTED = "implemented in activities/ and registered by the worker"


@activity.defn(name="reserve_stock")
async def reserve_stock(req: ReserveStock) -> Reserved:
    """Reserve a line's units on its SKU; priced from the catalogue."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="release_stock")
async def release_stock(req: ReleaseStock) -> bool:
    """Give a reservation back (compensation of reserve); no-op if not open."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="sell_stock")
async def sell_stock(req: SellStock) -> bool:
    """Turn a reservation into a sale once the order shipped."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="charge_payment")
async def charge_payment(req: ChargePayment) -> Charged:
    """Charge the order's total through the payment provider."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="refund_payment")
async def refund_payment(req: RefundPayment) -> int:
    """Refund what is still refundable of the order's charge (compensation)."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="create_order")
async def create_order(req: CreateOrder) -> str:
    """Create, submit and mark paid the order."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="cancel_order")
async def cancel_order(req: CancelOrder) -> str:
    """Cancel the order (compensation); no-op if never created."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="ship_order")
async def ship_order(req: ShipOrderInput) -> str:
    """Record the shipment on the order."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="deliver_order")
async def deliver_order(req: DeliverOrderInput) -> str:
    """Record the delivery on the order."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="send_confirmation")
async def send_confirmation(req: SendConfirmation) -> None:
    """Send the order confirmation through the notification port."""
    raise NotImplementedError(_IMPLEMENTED)
