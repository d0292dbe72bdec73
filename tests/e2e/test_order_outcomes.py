"""End to end: an order that did not go through says what happened, why, and what
was undone (rejected for stock or payment, cancelled by request)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import eventually
from tests.e2e.test_api import place, product, saga_status

pytestmark = pytest.mark.integration


async def _summary(http: httpx.AsyncClient, order_id: str, outcome: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        resp = await http.get(f"/orders/{order_id}")
        body = resp.json() if resp.status_code == 200 else {}
        return body if body.get("outcome") == outcome else None

    found: dict[str, Any] = await eventually(check)
    return found


async def test_an_order_beyond_the_stock_is_rejected_with_the_shortfall(
    http: httpx.AsyncClient,
) -> None:
    sku = await product(http, stock=3)
    order_id = (await place(http, sku, 50)).json()["order_id"]
    body = await _summary(http, order_id, "rejected")
    assert body["status"] == "rejected" and body["saga_status"] == "compensated"
    assert "requested 50, available 3" in body["failure"]
    assert body["undone"] == [] or all(s.startswith("reserve") for s in body["undone"])


async def test_a_declined_payment_is_rejected_and_says_what_was_undone(
    http: httpx.AsyncClient,
) -> None:
    sku = await product(http, stock=10)
    order_id = (await place(http, sku, 2, declines=True)).json()["order_id"]
    body = await _summary(http, order_id, "rejected")
    assert "declined" in body["failure"]
    # The engine compensates the failed step too (a refund of a declined charge is a
    # no-op), then the reservation.
    assert body["undone"] == ["charge", f"reserve:{sku}"]


async def test_a_cancelled_order_says_it_was_cancelled_why_and_what_was_undone(
    http: httpx.AsyncClient,
) -> None:
    sku = await product(http)
    order_id = (await place(http, sku)).json()["order_id"]
    await saga_status(http, order_id, "awaiting_shipment")
    await http.post(f"/orders/{order_id}/cancel", json={"reason": "changed mind"})
    body = await _summary(http, order_id, "cancelled")
    assert body["status"] == "cancelled" and "changed mind" in body["failure"]
    assert body["undone"] == ["create_order", "charge", f"reserve:{sku}"]
    assert body["total_cents"] == 3000
