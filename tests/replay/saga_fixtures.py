"""Helpers shared by the order-saga tests: catalogue set-up, invariant checks, history
recording.

Re-record the replay histories by running the integration tests with
``SAGAFLOW_RECORD_HISTORIES=1`` (see ``tests/replay/README.md``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle

from application.catalogue import Catalogue
from domain.commands import RegisterProduct, Restock
from domain.inventory import Inventory
from domain.order import Order
from domain.payment import Payment
from eventstore import EventStore, Repository
from sagaflow.settings import Settings
from workflows.client import get_status
from workflows.models import SagaStatus

HISTORIES = Path(__file__).parent / "histories"
RECORD_ENV = "SAGAFLOW_RECORD_HISTORIES"


def fast_settings(settings: Settings, **overrides: Any) -> Settings:
    """Test settings: quick retries so failures reach compensation in milliseconds."""
    values: dict[str, Any] = {
        "activity_retry_initial_s": 0.05,
        "activity_retry_max_interval_s": 0.2,
        "activity_retry_max_attempts": 5,
        "compensation_retry_max_attempts": 2,
        "notification_retry_max_attempts": 3,
        "activity_start_to_close_s": 10.0,
    }
    values.update(overrides)
    return settings.model_copy(update=values)


async def stock_catalogue(store: EventStore, stock: dict[str, tuple[int, int]]) -> None:
    """Register each SKU with ``(unit_price_cents, units)`` and stock it."""
    catalogue = Catalogue(store)
    for sku, (price, units) in stock.items():
        await catalogue.register_product(
            RegisterProduct(sku=sku, name=f"product {sku}", unit_price_cents=price)
        )
        await catalogue.restock(Restock(sku=sku, quantity=units))


async def event_types(store: EventStore, stream_id: str) -> list[str]:
    """The event types of one stream, in order."""
    return [e.event_type for e in await store.read_stream(stream_id)]


async def check_invariants(
    store: EventStore, skus: Iterable[str], order_ids: Iterable[str]
) -> dict[str, Any]:
    """Assert stock conservation and the payment ledger; return the figures.

    Stock: available + reserved + sold == stocked for every SKU, and reserved is the
    sum of the open reservations. Ledger: charged - refunded over the orders equals
    the totals of the live (not cancelled) orders.
    """
    inventory = Repository(store, Inventory)
    levels = {}
    for sku in skus:
        inv = await inventory.load(sku, use_snapshot=False)
        assert inv.available + inv.reserved + inv.sold == inv.stocked, inv.snapshot_state()
        assert inv.reserved == sum(r.quantity for r in inv.reservations.values())
        levels[sku] = (inv.available, inv.reserved, inv.sold)
    net = 0
    live = 0
    for order_id in order_ids:
        payment = await Repository(store, Payment).load(order_id)
        order = await Repository(store, Order).load(order_id)
        net += payment.charged_cents - payment.refunded_cents
        if order.status not in ("new", "cancelled"):
            live += order.total_cents
    assert net == live, f"charged - refunded = {net}, live orders total {live}"
    return {"levels": levels, "net_cents": net}


async def wait_for_status(
    client: Any, order_id: str, *wanted: str, timeout_s: float = 20.0
) -> SagaStatus:
    """Poll the status query until the saga is in one of ``wanted``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    status = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            status = await get_status(client, order_id)
        except Exception:
            status = None
        if status is not None and status.status in wanted:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} never reached {wanted}; last status {status}")


async def record_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """Save the workflow's history as ``histories/<name>.json`` when recording is on."""
    if os.environ.get(RECORD_ENV) != "1":
        return
    history = await handle.fetch_history()
    target = HISTORIES / f"{name}.json"
    # One folder per saga type (order/, returns/, trip/).
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(history.to_json())
