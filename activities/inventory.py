"""Inventory activities: reserve, release (compensation) and sell stock per SKU."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._support import (
    FaultInjector,
    business_failure,
    event_metadata,
    id_prefix,
    on_conflict_retry,
)
from domain.errors import DomainError
from domain.inventory import Inventory
from eventstore import EventStore, Repository
from workflows.models import UNKNOWN_PRODUCT, ReleaseStock, Reserved, ReserveStock, SellStock


def _reservation(reservation_id: str) -> tuple[str, str]:
    """The sub-entity a reservation command loads (the snapshot holds totals only)."""
    return ("reservation_id", reservation_id)


class InventoryActivities:
    """Activities on the Inventory streams (one per SKU)."""

    def __init__(
        self, store: EventStore, *, snapshot_every: int = 0, faults: FaultInjector | None = None
    ) -> None:
        self.inventory = Repository(store, Inventory, snapshot_every=snapshot_every)
        self.faults = faults or FaultInjector()

    @activity.defn(name="reserve_stock")
    async def reserve_stock(self, req: ReserveStock) -> Reserved:
        """Reserve the line's units; returns the reservation priced from the catalogue."""

        async def attempt() -> Reserved:
            inv = await self.inventory.load(req.sku, entity=_reservation(req.reservation_id))
            if not inv.registered:
                raise ApplicationError(
                    f"unknown sku {req.sku}: not in the catalogue",
                    type=UNKNOWN_PRODUCT,
                    non_retryable=True,
                )
            if inv.reservation(req.reservation_id) is None:
                try:
                    inv.reserve(req.reservation_id, req.order_id, req.quantity)
                except DomainError as err:
                    raise business_failure(err) from err
                await self.inventory.save(
                    inv, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
                )
            # else: a retry after a commit; the reservation is already open.
            assert inv.name is not None and inv.unit_price_cents is not None
            return Reserved(
                req.reservation_id, req.sku, inv.name, req.quantity, inv.unit_price_cents
            )

        result = await on_conflict_retry(attempt)
        await self.faults.after_commit("reserve_stock")
        return result

    @activity.defn(name="release_stock")
    async def release_stock(self, req: ReleaseStock) -> bool:
        """Release the reservation; False when it is not open (never made, or released)."""

        async def attempt() -> bool:
            inv = await self.inventory.load(req.sku, entity=_reservation(req.reservation_id))
            if inv.reservation(req.reservation_id) is None:
                return False
            inv.release(req.reservation_id)
            await self.inventory.save(
                inv, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
            )
            return True

        released = await on_conflict_retry(attempt)
        await self.faults.after_commit("release_stock")
        return released

    @activity.defn(name="sell_stock")
    async def sell_stock(self, req: SellStock) -> bool:
        """Turn the reservation into a sale; False when it is no longer open (sold)."""

        async def attempt() -> bool:
            inv = await self.inventory.load(req.sku, entity=_reservation(req.reservation_id))
            if inv.reservation(req.reservation_id) is None:
                return False
            inv.sell(req.reservation_id)
            await self.inventory.save(
                inv, metadata=event_metadata(req.ctx), id_prefix=id_prefix(req.ctx)
            )
            return True

        return await on_conflict_retry(attempt)
