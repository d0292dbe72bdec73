"""Catalogue use cases: SKUs, names and prices kept as Inventory events.

Called by the API, the CLI and the order starter (never by workflows or the
worker's activities): registering a product, changing its price, restocking, and
looking up which SKUs exist (one batched read for a whole order).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from application.context import Context
from application.errors import IdempotencyKeyReused, NotFound
from domain.commands import RegisterProduct, Restock
from domain.inventory import Inventory
from eventstore import DuplicateEventConflict, EventStore, Repository, on_conflict_retry
from projections import queries


@dataclass(frozen=True)
class Product:
    """A catalogue entry with its stock levels."""

    sku: str
    name: str
    unit_price_cents: int
    available: int
    reserved: int
    sold: int
    stocked: int


class Catalogue:
    """Catalogue commands and look-ups over the Inventory streams."""

    def __init__(self, store: EventStore, *, snapshot_every: int = 0) -> None:
        self.inventory = Repository(store, Inventory, snapshot_every=snapshot_every)

    async def register_product(self, cmd: RegisterProduct, *, user_id: str = "") -> Product:
        """Register a SKU (raises IllegalTransition when it is already registered)."""
        inv = await self.inventory.load(cmd.sku)
        inv.register(cmd.name, cmd.unit_price_cents)
        await self.inventory.save(inv, metadata={"user_id": user_id})
        return _product(inv)

    async def change_price(self, sku: str, unit_price_cents: int, *, user_id: str = "") -> Product:
        """Set a new unit price; orders already priced keep theirs."""

        async def attempt() -> Inventory:
            inv = await self.inventory.load(sku)
            inv.change_price(unit_price_cents)
            await self.inventory.save(inv, metadata={"user_id": user_id})
            return inv

        return _product(await on_conflict_retry(attempt))

    async def restock(
        self, cmd: Restock, *, idempotency_key: str | None = None, user_id: str = ""
    ) -> Product:
        """Add units; with ``idempotency_key`` a repeated request adds them once."""

        async def attempt() -> Inventory:
            inv = await self.inventory.load(cmd.sku)
            inv.add_stock(cmd.quantity)
            prefix = ("restock", cmd.sku, idempotency_key) if idempotency_key else None
            result = await self.inventory.save(inv, metadata={"user_id": user_id}, id_prefix=prefix)
            if result is not None and result.duplicate:
                return await self.inventory.load(cmd.sku)  # a repeat: the stock was added once
            return inv

        try:
            return _product(await on_conflict_retry(attempt))
        except DuplicateEventConflict:
            # The key's event is stored with another quantity: the same key for
            # another request. Refused, not answered as if this one had been applied.
            raise IdempotencyKeyReused() from None

    async def product(self, sku: str) -> Product | None:
        """The entry for ``sku``, or None when it is not registered."""
        inv = await self.inventory.load(sku)
        return _product(inv) if inv.registered else None

    async def known_skus(self, skus: Iterable[str]) -> set[str]:
        """Those of ``skus`` that are registered, in one read of the store.

        Why a stream's existence is enough: every Inventory command but ``register``
        needs a registered product, so an Inventory stream's first event is always
        ProductRegistered.
        """
        by_stream = {self.inventory.stream_id(sku): sku for sku in set(skus)}
        versions = await self.inventory.store.stream_versions(list(by_stream))
        return {by_stream[stream_id] for stream_id in versions}


def _product(inv: Inventory) -> Product:
    return Product(
        sku=inv.sku,
        name=inv.name or "",
        unit_price_cents=inv.unit_price_cents or 0,
        available=inv.available,
        reserved=inv.reserved,
        sold=inv.sold,
        stocked=inv.stocked,
    )


async def register_product(
    store: EventStore, cmd: RegisterProduct, *, user_id: str = ""
) -> Product:
    """Add a SKU to the catalogue (IllegalTransition when it is already registered)."""
    return await Catalogue(store).register_product(cmd, user_id=user_id)


async def restock(
    store: EventStore, cmd: Restock, *, idempotency_key: str | None = None, user_id: str = ""
) -> Product:
    """Add units of a registered SKU (NotFound otherwise); a key makes repeats harmless."""
    catalogue = Catalogue(store)
    if not await catalogue.known_skus([cmd.sku]):
        raise NotFound("product", cmd.sku)
    return await catalogue.restock(cmd, idempotency_key=idempotency_key, user_id=user_id)


async def product(store: EventStore, sku: str) -> Product:
    """The catalogue entry with its stock, from the event store (always current)."""
    found = await Catalogue(store).product(sku)
    if found is None:
        raise NotFound("product", sku)
    return found


async def inventory_level(ctx: Context, sku: str) -> dict[str, Any]:
    """The inventory read model of one SKU; from the event store while a SKU just
    registered is not projected yet.

    Why the fallback: ``POST /products`` answered 201, so a 404 for the same SKU a
    moment later (the projector a batch behind) would deny a resource that exists.
    """
    level = await queries.get_inventory_level(ctx.pool, sku)
    if level is None:
        catalogue = Catalogue(ctx.store)
        inv = await catalogue.inventory.load(sku)
        if not inv.registered:
            raise NotFound("inventory", sku)
        [last] = await ctx.store.read_stream(inv.stream_id, inv.version)
        level = queries.InventoryLevel(
            sku=sku,
            name=inv.name,
            unit_price_cents=inv.unit_price_cents,
            available=inv.available,
            reserved=inv.reserved,
            sold=inv.sold,
            updated_at=last.recorded_at,
        )
    return level.model_dump(mode="json")
