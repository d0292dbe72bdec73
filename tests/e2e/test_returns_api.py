"""End to end over HTTP: returns through the API, worker and projector processes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import eventually
from tests.e2e.test_api import place, product, saga_status, summary_status

pytestmark = pytest.mark.integration


async def delivered_order(http: httpx.AsyncClient, qty: int = 2) -> tuple[str, str]:
    sku = await product(http)
    order_id = (await place(http, sku, qty)).json()["order_id"]
    await saga_status(http, order_id, "awaiting_shipment")
    shipped = await http.post(
        f"/orders/{order_id}/ship", json={"tracking_number": "TRK-1", "carrier": "DHL"}
    )
    assert shipped.status_code == 200, shipped.text
    assert (await http.post(f"/orders/{order_id}/deliver")).status_code == 200
    await summary_status(http, order_id, "delivered")
    return order_id, sku


async def return_status(http: httpx.AsyncClient, return_id: str, wanted: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        resp = await http.get(f"/returns/{return_id}")
        body = resp.json() if resp.status_code == 200 else {}
        return body if body.get("status") == wanted else None

    result: dict[str, Any] = await eventually(check)
    return result


async def test_a_return_is_opened_received_refunded_and_shown(http: httpx.AsyncClient) -> None:
    order_id, sku = await delivered_order(http)
    opened = await http.post(
        f"/orders/{order_id}/returns",
        json={"lines": [{"sku": sku, "quantity": 1}], "reason": "scratched"},
    )
    assert opened.status_code == 202, opened.text
    return_id = opened.json()["return_id"]
    assert opened.headers["Location"] == f"/returns/{return_id}"
    await saga_status(http, return_id, "awaiting_goods")
    received = await http.post(f"/returns/{return_id}/receive", json={})
    assert received.status_code == 200, received.text
    summary = await return_status(http, return_id, "completed")
    assert summary["refunded_cents"] == 1500
    again = await http.post(f"/returns/{return_id}/receive", json={})
    assert again.status_code == 409


async def test_bad_returns_get_404_409_and_422(http: httpx.AsyncClient) -> None:
    order_id, sku = await delivered_order(http)
    unknown = await http.post(
        "/orders/no-such-order/returns",
        json={"lines": [{"sku": sku, "quantity": 1}], "reason": "x"},
    )
    assert unknown.status_code == 404, unknown.text
    too_many = await http.post(
        f"/orders/{order_id}/returns",
        json={"lines": [{"sku": sku, "quantity": 3}], "reason": "x"},
    )
    assert too_many.status_code == 409, too_many.text
    assert "exceed the 2 returnable" in too_many.json()["detail"]
    invalid = await http.post(f"/orders/{order_id}/returns", json={"lines": [], "reason": ""})
    assert invalid.status_code == 422
    assert invalid.json()["errors"]
    not_delivered = (await place(http, sku, 1)).json()["order_id"]
    await saga_status(http, not_delivered, "awaiting_shipment")
    refused = await http.post(
        f"/orders/{not_delivered}/returns",
        json={"lines": [{"sku": sku, "quantity": 1}], "reason": "x"},
    )
    assert refused.status_code == 409
    assert "only a delivered order" in refused.json()["detail"]
    assert (await http.post("/returns/no-such-return/receive", json={})).status_code == 404
    assert (await http.get("/returns/no-such-return")).status_code == 404


async def test_idempotency_key_returns_the_same_return_and_refuses_another_body(
    http: httpx.AsyncClient,
) -> None:
    order_id, sku = await delivered_order(http)
    body = {"lines": [{"sku": sku, "quantity": 2}], "reason": "duplicate gift"}
    headers = {"Idempotency-Key": f"ret-{order_id}"}
    first = await http.post(f"/orders/{order_id}/returns", json=body, headers=headers)
    assert first.status_code == 202, first.text
    await saga_status(http, first.json()["return_id"], "awaiting_goods")
    # The retry is answered with the same return, though its units are now claimed.
    again = await http.post(f"/orders/{order_id}/returns", json=body, headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["return_id"] == first.json()["return_id"]
    other = await http.post(
        f"/orders/{order_id}/returns", json={**body, "reason": "other"}, headers=headers
    )
    assert other.status_code == 409
