"""The product catalogue and inventory (kept as events on each SKU's stream)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header

from api.deps import Admin, Reader
from api.errors import PROBLEM_RESPONSES
from api.messages import InventoryQuery, ProductQuery, RegisterProductCommand, RestockCommand
from api.models import ProductCreate, ProductOut, RestockIn, Sku

router = APIRouter(tags=["products"], responses=PROBLEM_RESPONSES)


@router.post("/products", status_code=201, response_model=ProductOut)
async def register_product(body: ProductCreate, c: Admin) -> dict[str, Any]:
    """Add a SKU to the catalogue with its name and unit price."""
    product: dict[str, Any] = await c.commands.dispatch(
        RegisterProductCommand(body.sku, body.name, body.unit_price_cents, "api")
    )
    return product


@router.get("/products/{sku}", response_model=ProductOut)
async def get_product(sku: Sku, c: Reader) -> dict[str, Any]:
    """A catalogue entry with its current stock (from the event store)."""
    product: dict[str, Any] = await c.queries.dispatch(ProductQuery(sku))
    return product


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
    product: dict[str, Any] = await c.commands.dispatch(
        RestockCommand(sku, body.quantity, idempotency_key, "api")
    )
    return product


@router.get("/inventory/{sku}")
async def get_inventory(sku: Sku, c: Reader) -> dict[str, Any]:
    """Available, reserved and sold units of a SKU (read model)."""
    level: dict[str, Any] = await c.queries.dispatch(InventoryQuery(sku))
    return level
