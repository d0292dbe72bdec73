"""A resource the API just answered as created is never "not found" a moment later:
an accepted order has an (empty) event stream, a registered SKU an inventory level,
before the saga and the projector have caught up."""

from __future__ import annotations

import pytest

from application import Context
from application.catalogue import inventory_level, register_product
from application.errors import NotFound
from application.orders import order_events, saga_started_token
from domain.commands import RegisterProduct
from eventstore.postgres import PostgresEventStore
from sagaflow.settings import Settings
from workflows.models import ORDER_SAGA


@pytest.fixture
def ctx(pg_store: PostgresEventStore) -> Context:
    return Context(settings=Settings(), store=pg_store)


async def test_an_accepted_order_has_no_events_yet_not_a_404(ctx: Context) -> None:
    await saga_started_token(
        ctx.store, saga_id="acc-1", saga_type=ORDER_SAGA, keys={}, order_id="acc-1"
    )
    assert await order_events(ctx, "acc-1") == []
    # A saga of another type under that id is no order; an unknown id stays a 404.
    await saga_started_token(ctx.store, saga_id="trip-1", saga_type="TripSaga", keys={})
    for unknown in ("trip-1", "never-placed"):
        with pytest.raises(NotFound, match="no order with id"):
            await order_events(ctx, unknown)


async def test_a_registered_sku_has_a_level_before_the_projector_ran(ctx: Context) -> None:
    await register_product(
        ctx.store, RegisterProduct(sku="NEW-1", name="Mug", unit_price_cents=450)
    )
    level = await inventory_level(ctx, "NEW-1")
    assert level["sku"] == "NEW-1" and level["name"] == "Mug"
    assert (level["available"], level["reserved"], level["sold"]) == (0, 0, 0)
    assert level["unit_price_cents"] == 450 and level["updated_at"]
    with pytest.raises(NotFound, match="no inventory with id 'GHOST'"):
        await inventory_level(ctx, "GHOST")
