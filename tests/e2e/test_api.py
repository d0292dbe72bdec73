"""End to end over HTTP: the API, worker, relay and projector as separate processes on
real PostgreSQL, Temporal and Kafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from sagaflow.stack import Stack
from tests.e2e.conftest import KEY, READER, eventually, key_whose_order

pytestmark = pytest.mark.integration


async def product(http: httpx.AsyncClient, stock: int = 50) -> str:
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    created = await http.post(
        "/products", json={"sku": sku, "name": "Lamp", "unit_price_cents": 1500}
    )
    assert created.status_code == 201, created.text
    restocked = await http.post(f"/products/{sku}/restock", json={"quantity": stock})
    assert restocked.status_code == 200, restocked.text
    return sku


async def place(http: httpx.AsyncClient, sku: str, qty: int = 2, *, declines: bool = False):
    return await http.post(
        "/orders",
        json={"customer_id": "cust-1", "lines": [{"sku": sku, "quantity": qty}]},
        headers={"Idempotency-Key": key_whose_order(declines)},
    )


async def saga_status(http: httpx.AsyncClient, order_id: str, *wanted: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        resp = await http.get(f"/orders/{order_id}/saga")
        body = resp.json() if resp.status_code == 200 else {}
        return body if body.get("status") in wanted else None

    result: dict[str, Any] = await eventually(check)
    return result


async def summary_status(http: httpx.AsyncClient, order_id: str, wanted: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        resp = await http.get(f"/orders/{order_id}")
        body = resp.json() if resp.status_code == 200 else {}
        return body if body.get("status") == wanted else None

    result: dict[str, Any] = await eventually(check)
    return result


async def test_an_order_completes_and_shows_in_summary_and_analytics(
    http: httpx.AsyncClient,
) -> None:
    sku = await product(http)
    resp = await place(http, sku, 2)
    assert resp.status_code == 202, resp.text
    order_id = resp.json()["order_id"]
    assert resp.headers["Location"] == f"/orders/{order_id}"
    await saga_status(http, order_id, "awaiting_shipment")
    summary = await summary_status(http, order_id, "paid")
    assert summary["total_cents"] == 3000
    assert summary["lines"] == [
        {"sku": sku, "name": "Lamp", "quantity": 2, "unit_price_cents": 1500}
    ]

    async def sold_in_analytics() -> bool:
        rows = (await http.get("/analytics/products")).json()
        return any(r["sku"] == sku and r["units"] == 2 for r in rows)

    await eventually(sold_in_analytics)
    inventory = (await http.get(f"/inventory/{sku}")).json()
    assert (inventory["available"], inventory["reserved"]) == (48, 2)
    events = (await http.get(f"/orders/{order_id}/events")).json()
    assert [e["event_type"] for e in events][:2] == ["OrderCreated", "OrderItemAdded"]


async def test_a_declined_payment_compensates_and_releases_stock(
    http: httpx.AsyncClient,
) -> None:
    sku = await product(http, stock=10)
    resp = await place(http, sku, 3, declines=True)
    order_id = resp.json()["order_id"]
    state = await saga_status(http, order_id, "compensated")
    assert "declined" in state["failure"]

    async def released() -> bool:
        level = (await http.get(f"/inventory/{sku}")).json()
        return level.get("available") == 10 and level.get("reserved") == 0

    await eventually(released)


async def test_cancel_before_shipping_then_ship_is_refused(http: httpx.AsyncClient) -> None:
    sku = await product(http)
    order_id = (await place(http, sku)).json()["order_id"]
    await saga_status(http, order_id, "awaiting_shipment")
    cancelled = await http.post(f"/orders/{order_id}/cancel", json={"reason": "changed mind"})
    assert cancelled.status_code == 200, cancelled.text
    await summary_status(http, order_id, "cancelled")
    refused = await http.post(
        f"/orders/{order_id}/ship", json={"tracking_number": "T", "carrier": "UPS"}
    )
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")


async def test_ship_and_deliver_and_cancel_after_shipping_is_refused(
    http: httpx.AsyncClient,
) -> None:
    sku = await product(http)
    order_id = (await place(http, sku)).json()["order_id"]
    await saga_status(http, order_id, "awaiting_shipment")
    shipped = await http.post(
        f"/orders/{order_id}/ship", json={"tracking_number": "TRK-1", "carrier": "DHL"}
    )
    assert shipped.status_code == 200, shipped.text
    refused = await http.post(f"/orders/{order_id}/cancel", json={"reason": "too late"})
    assert refused.status_code == 409
    assert "ship" in refused.json()["detail"]
    delivered = await http.post(f"/orders/{order_id}/deliver")
    assert delivered.status_code == 200, delivered.text
    summary = await summary_status(http, order_id, "delivered")
    assert (summary["tracking_number"], summary["carrier"]) == ("TRK-1", "DHL")


async def test_idempotency_key_returns_the_same_order_and_refuses_another_body(
    http: httpx.AsyncClient,
) -> None:
    sku = await product(http)
    key = key_whose_order(False)
    body = {"customer_id": "cust-9", "lines": [{"sku": sku, "quantity": 1}]}
    first, second = await asyncio.gather(
        http.post("/orders", json=body, headers={"Idempotency-Key": key}),
        http.post("/orders", json=body, headers={"Idempotency-Key": key}),
    )
    assert first.status_code == second.status_code == 202
    assert first.json()["order_id"] == second.json()["order_id"]
    other = dict(body, lines=[{"sku": sku, "quantity": 2}])
    conflict = await http.post("/orders", json=other, headers={"Idempotency-Key": key})
    assert conflict.status_code == 409
    assert "Idempotency-Key" in conflict.json()["detail"]


async def test_a_restock_key_reused_for_another_quantity_is_refused(
    http: httpx.AsyncClient,
) -> None:
    sku = await product(http, stock=10)
    key = {"Idempotency-Key": f"restock-{uuid.uuid4().hex[:8]}"}
    first = await http.post(f"/products/{sku}/restock", json={"quantity": 3}, headers=key)
    again = await http.post(f"/products/{sku}/restock", json={"quantity": 3}, headers=key)
    assert first.status_code == again.status_code == 200
    assert first.json()["available"] == again.json()["available"] == 13
    other = await http.post(f"/products/{sku}/restock", json={"quantity": 4}, headers=key)
    assert other.status_code == 409, other.text
    assert "Idempotency-Key" in other.json()["detail"]
    assert (await http.get(f"/products/{sku}")).json()["available"] == 13


async def test_a_consistency_token_reads_your_own_write(http: httpx.AsyncClient) -> None:
    sku = await product(http)
    accepted = (await place(http, sku)).json()
    resp = await http.get(
        f"/orders/{accepted['order_id']}",
        params={"consistency_token": accepted["consistency_token"]},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Consistency-Reached"] == "true"
    assert resp.json()["order_id"] == accepted["order_id"]
    bad = await http.get(
        f"/orders/{accepted['order_id']}", params={"consistency_token": "not-a-token"}
    )
    assert bad.status_code == 422
    # Well formed, but naming a version the order's stream never reached: refused at
    # once, not after the read-your-writes wait (5 s by default).
    position, stream, version = accepted["consistency_token"].split("~")
    began = time.monotonic()
    never = await http.get(
        f"/orders/{accepted['order_id']}",
        params={"consistency_token": f"{position}~{stream}~{int(version) + 1000}"},
    )
    assert never.status_code == 422, never.text
    assert "never made" in never.json()["detail"]
    assert time.monotonic() - began < 2.5


async def test_bad_orders_are_refused_with_a_message_per_problem_shape_first(
    http: httpx.AsyncClient,
) -> None:
    sku = await product(http)
    resp = await http.post(
        "/orders",
        json={
            "customer_id": "cust-1",
            "lines": [
                {"sku": sku, "quantity": 0},
                {"sku": sku, "quantity": 1},
                {"sku": "NO-SUCH-SKU", "quantity": 1},
            ],
        },
    )
    assert resp.status_code == 422
    messages = [e["message"] for e in resp.json()["errors"]]
    # A badly shaped order is refused before the catalogue is read: its shape
    # problems only, each one; unknown SKUs are named once the shape is right.
    assert messages == [
        f"line 0 (sku {sku}): quantity must be positive, got 0",
        f"line 1 (sku {sku}): duplicate sku, already on line 0",
    ]
    unknown = await http.post(
        "/orders",
        json={
            "customer_id": "cust-1",
            "lines": [{"sku": sku, "quantity": 1}, {"sku": "NO-SUCH-SKU", "quantity": 1}],
        },
    )
    assert unknown.status_code == 422
    assert [e["message"] for e in unknown.json()["errors"]] == [
        "line 1 (sku NO-SUCH-SKU): unknown sku"
    ]
    shape = await http.post("/orders", json={"customer_id": "c", "lines": "x"})
    assert shape.status_code == 422
    assert shape.json()["errors"][0]["field"] == "lines"


async def test_auth_requires_a_key_and_the_right_scope(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as anon:
        assert (await anon.get("/analytics/sagas")).status_code == 401
        wrong = await anon.get("/analytics/sagas", headers={"X-API-Key": "x" * 20})
        assert wrong.status_code == 401
        reader = {"X-API-Key": READER}
        assert (await anon.get("/analytics/sagas", headers=reader)).status_code == 200
        # The order summary checks the key in its route (the hot path): same answers.
        missing_key = await anon.get("/orders/some-order")
        assert missing_key.status_code == 401
        assert missing_key.json()["detail"] == "missing API key"
        assert missing_key.headers["WWW-Authenticate"] == "ApiKey"
        unknown_key = await anon.get("/orders/some-order", headers={"X-API-Key": "x" * 20})
        assert unknown_key.status_code == 401
        assert (await anon.get("/orders/some-order", headers=reader)).status_code == 404
        forbidden = await anon.post(
            "/orders", json={"customer_id": "c", "lines": []}, headers=reader
        )
        assert forbidden.status_code == 403
        assert (await anon.get("/health")).status_code == 200
        ready = await anon.get("/ready")
        assert ready.status_code == 200, ready.text


async def test_unknown_orders_are_404_and_signals_to_them_change_nothing(
    http: httpx.AsyncClient,
) -> None:
    missing = str(uuid.uuid4())
    assert (await http.get(f"/orders/{missing}")).status_code == 404
    assert (await http.get(f"/orders/{missing}/saga")).status_code == 404
    shipped = await http.post(
        f"/orders/{missing}/ship", json={"tracking_number": "T", "carrier": "C"}
    )
    assert shipped.status_code == 404


async def test_backpressure_answers_429_when_projections_lag(stack: Stack) -> None:
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers={"X-API-Key": KEY}, timeout=30
    ) as http:
        sku = await product(http)
        stack.kill("projector")
        try:
            accepted = await place(http, sku)
            assert accepted.status_code == 202
            # A second API whose lag bound is 0 events: the stopped projector is behind.
            strict_url = stack.start_extra_api({"SAGAFLOW_PROJECTION_LAG_MAX_EVENTS": "0"})
            async with httpx.AsyncClient(
                base_url=strict_url, headers={"X-API-Key": KEY}, timeout=30
            ) as strict:
                refused = await place(strict, sku)
                assert refused.status_code == 429, refused.text
                assert int(refused.headers["Retry-After"]) > 0
                assert "projections" in refused.json()["detail"]
                # Reads still work while writes are throttled.
                assert (await strict.get(f"/inventory/{sku}")).status_code in (200, 404)
        finally:
            stack.start_process("projector")
