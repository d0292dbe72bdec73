"""Order activities: create (created, items, submitted, paid in one append), cancel
(compensation), ship and deliver."""

from __future__ import annotations

from temporalio import activity

from activities._support import FaultInjector, business_failure, event_metadata, id_prefix
from domain.errors import CommandRefused, DomainError
from domain.order import Order
from eventstore import EventStore, Repository
from workflows.models import CancelOrder, CreateOrder, DeliverOrderInput, ShipOrderInput


class OrderActivities:
    """Activities on ``order-<order_id>``."""

    def __init__(
        self, store: EventStore, *, snapshot_every: int = 0, faults: FaultInjector | None = None
    ) -> None:
        self.orders = Repository(store, Order, snapshot_every=snapshot_every)
        self.faults = faults or FaultInjector()

    @activity.defn(name="create_order")
    async def create_order(self, req: CreateOrder) -> str:
        """Create, fill, submit and mark paid the order; returns its status."""
        order = await self.orders.load(req.order_id)
        if order.status in ("paid", "shipped", "delivered"):
            return order.status  # a retry after the commit
        try:
            if order.status != "new":
                # Why refuse: a cancelled (compensated) order must not come back.
                raise CommandRefused("Order", order.id, order.status, "create")
            order.create(req.customer_id)
            for line in req.lines:
                order.add_item(line.sku, line.name, line.quantity, line.unit_price_cents)
            order.submit()
            order.receive_payment(req.payment_id, req.amount_cents)
        except DomainError as err:
            raise business_failure(err) from err
        await self.orders.save(
            order, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
        )
        await self.faults.after_commit("create_order")
        return order.status

    @activity.defn(name="cancel_order")
    async def cancel_order(self, req: CancelOrder) -> str:
        """Cancel the order; a no-op when it was never created or is already cancelled."""
        order = await self.orders.load(req.order_id)
        if order.status in ("new", "cancelled"):
            return order.status
        try:
            order.cancel(req.reason)
        except DomainError as err:
            raise business_failure(err) from err
        await self.orders.save(
            order, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
        )
        await self.faults.after_commit("cancel_order")
        return order.status

    @activity.defn(name="ship_order")
    async def ship_order(self, req: ShipOrderInput) -> str:
        """Record the shipment (tracking number, carrier)."""
        order = await self.orders.load(req.order_id)
        if order.status in ("shipped", "delivered"):
            return order.status
        try:
            order.ship(req.tracking_number, req.carrier)
        except DomainError as err:
            raise business_failure(err) from err
        await self.orders.save(
            order, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
        )
        return order.status

    @activity.defn(name="deliver_order")
    async def deliver_order(self, req: DeliverOrderInput) -> str:
        """Record the delivery."""
        order = await self.orders.load(req.order_id)
        if order.status == "delivered":
            return order.status
        try:
            order.deliver()
        except DomainError as err:
            raise business_failure(err) from err
        await self.orders.save(
            order, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
        )
        return order.status
