"""The product catalogue and inventory (kept as events on each SKU's stream)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Header

from api.deps import Admin, Reader
from api.errors import PROBLEM_RESPONSES
from api.models import ProductCreate, ProductOut, RestockIn, Sku
from application import catalogue
from domain.commands import RegisterProduct, Restock

router = APIRouter(tags=["products"], responses=PROBLEM_RESPONSES)


@router.post("/products", status_code=201, response_model=ProductOut)
async def register_product(body: ProductCreate, c: Admin) -> dict[str, Any]:
    """Add a SKU to the catalogue with its name and unit price."""
    cmd = RegisterProduct(sku=body.sku, name=body.name, unit_price_cents=body.unit_price_cents)
    return dataclasses.asdict(await catalogue.register_product(c.ctx.store, cmd, user_id="api"))


@router.get("/products/{sku}", response_model=ProductOut)
async def get_product(sku: Sku, c: Reader) -> dict[str, Any]:
    """A catalogue entry with its current stock (from the event store)."""
    return dataclasses.asdict(await catalogue.product(c.ctx.store, sku))


@router.post("/products/{sku}/restock", response_model=ProductOut)
async def restock(
    sku: Sku,
    body: RestockIn,
    c: Admin,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> dict[str, Any]:
    """Add units of a SKU; an Idempotency-Key makes a repeated request harmless."""
    product = await catalogue.restock(
        c.ctx.store,
        Restock(sku=sku, quantity=body.quantity),
        idempotency_key=idempotency_key,
        user_id="api",
    )
    return dataclasses.asdict(product)


@router.get("/inventory/{sku}")
async def get_inventory(sku: Sku, c: Reader) -> dict[str, Any]:
    """Available, reserved and sold units of a SKU (read model; from the event store
    while a SKU just registered is not projected yet)."""
    return await catalogue.inventory_level(c.ctx, sku)
