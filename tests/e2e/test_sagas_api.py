"""End to end over HTTP: the generic saga routes, the fleet-wide inbox, bulk retry
after an outage, escalation, and the search attributes, on the running stack."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from activities.payment import draw
from sagaflow.stack import Stack
from tests.e2e.conftest import DECLINE_RATE, eventually
from tests.e2e.test_api import place, product, saga_status

pytestmark = pytest.mark.integration


def _outage_file(stack: Stack) -> Path:
    return Path(stack.env["SAGAFLOW_PAYMENT_REFUND_OUTAGE_FILE"])


async def _row(http: httpx.AsyncClient, saga_id: str, *wanted: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        resp = await http.get(f"/sagas/{saga_id}")
        row = resp.json().get("saga") if resp.status_code == 200 else None
        return row if row and row["status"] in wanted else None

    result: dict[str, Any] = await eventually(check, within=60)
    return result


async def _parked_orders(http: httpx.AsyncClient, stack: Stack, n: int) -> list[str]:
    """``n`` confirmed orders cancelled during a refund outage: each parks its refund."""
    sku = await product(http)
    ids = []
    for _ in range(n):
        placed = await place(http, sku)
        assert placed.status_code == 202, placed.text
        ids.append(placed.json()["order_id"])
    for order_id in ids:
        await saga_status(http, order_id, "awaiting_shipment")
    _outage_file(stack).touch()
    cancels = await asyncio.gather(
        *(http.post(f"/sagas/{i}/cancel", json={"reason": "drill"}) for i in ids)
    )
    assert [c.status_code for c in cancels] == [200] * n, [c.text for c in cancels]
    assert {c.json()["result"] for c in cancels} == {"compensation_parked"}
    return ids


async def test_saga_types_list_the_order_saga_with_schema_steps_waits_and_keys(
    http: httpx.AsyncClient,
) -> None:
    resp = await http.get("/saga-types")
    assert resp.status_code == 200
    [order] = [t for t in resp.json() if t["name"] == "OrderSaga"]
    assert "order_id" in order["input_schema"]["properties"]
    assert {"name": "ship", "kind": "pivot"}.items() <= order["steps"][3].items()
    assert order["waits"] and {k["name"] for k in order["keys"]} >= {"CustomerId"}


async def test_start_a_saga_by_type_then_read_list_plan_and_events(
    http: httpx.AsyncClient,
) -> None:
    sku = await product(http)
    # An order id the stack's payment simulator approves.
    order_id = next(
        i for i in (f"g-{sku}-{n}" for n in range(100)) if draw(i, "decline") >= DECLINE_RATE
    )
    body = {
        "order_id": order_id,
        "customer_id": f"cust-{sku}",
        "lines": [{"sku": sku, "quantity": 1}],
    }
    started = await http.post(
        "/saga-types/OrderSaga/sagas", json=body, headers={"Idempotency-Key": sku}
    )
    assert started.status_code == 202, started.text
    saga_id = started.json()["saga_id"]
    assert started.headers["Location"] == f"/sagas/{saga_id}" and saga_id == body["order_id"]
    again = await http.post(
        "/saga-types/OrderSaga/sagas", json=body, headers={"Idempotency-Key": sku}
    )
    assert again.json()["saga_id"] == saga_id
    other = await http.post(
        "/saga-types/OrderSaga/sagas",
        json={**body, "order_id": "x"},
        headers={"Idempotency-Key": sku},
    )
    assert other.status_code == 409
    # The same saga id (the order id) for another customer: refused, not attached.
    rival = await http.post(
        "/saga-types/OrderSaga/sagas", json={**body, "customer_id": "someone-else"}
    )
    assert rival.status_code == 409, rival.text
    assert "already exists with other input" in rival.json()["detail"]

    row = await _row(http, saga_id, "awaiting_shipment")
    assert row["keys"]["CustomerId"] == body["customer_id"]
    shown = (await http.get(f"/sagas/{saga_id}")).json()
    assert shown["source"] == "read_model+live" and shown["live"]["status"] == "awaiting_shipment"
    listed = await http.get("/sagas", params={"key": f"CustomerId:{body['customer_id']}"})
    assert [s["saga_id"] for s in listed.json()["items"]] == [saga_id]
    page = await http.get("/sagas", params={"type": "OrderSaga", "page_size": 1})
    assert len(page.json()["items"]) == 1 and page.json()["has_more"] in (True, False)
    plan = await http.get(f"/sagas/{saga_id}/plan")
    assert plan.status_code == 200 and plan.json()["pivot_committed"] is False
    assert plan.json()["compensation"]
    events = await http.get(f"/sagas/{saga_id}/events")
    assert events.json()[0]["event_type"] == "SagaStarted"


async def test_refusals_are_404_422_and_409_and_write_nothing(http: httpx.AsyncClient) -> None:
    unknown = await http.post("/saga-types/NoSuchSaga/sagas", json={})
    assert unknown.status_code == 404 and "OrderSaga" in unknown.json()["detail"]
    invalid = await http.post("/saga-types/OrderSaga/sagas", json={"order_id": "bad-1"})
    assert invalid.status_code == 422
    assert {e["field"] for e in invalid.json()["errors"]} >= {"customer_id", "lines"}
    assert (await http.get("/sagas/bad-1")).status_code == 404
    assert (await http.get("/sagas/bad-1/events")).status_code == 404
    assert (await http.get("/sagas", params={"key": "nocolon"})).status_code == 422
    # A scalar parameter given twice is refused, not silently cut to its last value
    # (schemathesis found ?limit=true&limit=5 answered 200).
    for path, name in (("/sagas/parked", "limit"), ("/sagas", "page_size")):
        twice = await http.get(path, params=[(name, "1"), (name, "2")])
        assert twice.status_code == 422, (path, twice.text)
        assert twice.json()["errors"] == [
            {"field": name, "message": "given 2 times; it takes one value"}
        ]
        assert (await http.get(path, params={name: "2"})).status_code == 200
    assert (await http.get("/sagas/nope-404")).status_code == 404
    assert (await http.get("/sagas/nope-404/plan")).status_code == 404
    for action, body in (
        ("cancel", {"reason": "test"}),
        ("retry-compensation", {"step": "charge"}),
        ("resolve", {"step": "charge"}),
        ("skip", {"step": "charge"}),
    ):
        resp = await http.post(f"/sagas/nope-404/{action}", json=body)
        assert resp.status_code == 404, (action, resp.text)

    sku = await product(http)
    placed = await place(http, sku)
    order_id = placed.json()["order_id"]
    await saga_status(http, order_id, "awaiting_shipment")
    before = len((await http.get(f"/sagas/{order_id}/events")).json())
    for action in ("retry-compensation", "resolve", "skip"):
        resp = await http.post(f"/sagas/{order_id}/{action}", json={"step": "charge", "note": "t"})
        assert resp.status_code == 409, (action, resp.text)
        assert "parked: none" in resp.json()["detail"]
    assert len((await http.get(f"/sagas/{order_id}/events")).json()) == before


async def test_an_outage_parks_refunds_in_the_inbox_then_bulk_retry_compensates_all(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    try:
        ids = await _parked_orders(http, stack, 3)
        for order_id in ids:
            row = await _row(http, order_id, "compensation_parked")
            assert [p["step"] for p in row["parked"]] == ["charge"]

        async def inbox() -> list[dict[str, Any]] | None:
            rows = (await http.get("/sagas/parked", params={"type": "OrderSaga"})).json()
            mine = [r for r in rows if r["saga_id"] in ids]
            return mine if len(mine) == len(ids) else None

        listed = await eventually(inbox, within=60)
        assert all(r["step"] == "charge" and r["waited_s"] >= 0 for r in listed)
        one = ids[0]
        skip_wrong = await http.post(
            f"/sagas/{one}/skip", json={"step": "create_order", "note": "x"}
        )
        assert skip_wrong.status_code == 409 and "charge" in skip_wrong.json()["detail"]
    finally:
        _outage_file(stack).unlink(missing_ok=True)
    retried = await http.post(
        "/sagas/parked/retry", json={"saga_type": "OrderSaga", "step": "charge", "note": "fixed"}
    )
    assert retried.status_code == 200, retried.text
    results = {r["saga_id"]: r["result"] for r in retried.json()["results"]}
    assert {results[i] for i in ids} == {"done"}, results
    for order_id in ids:
        await _row(http, order_id, "compensated")
        events = (await http.get(f"/sagas/{order_id}/events")).json()
        retries = [e for e in events if e["event_type"] == "CompensationRetried"]
        assert retries and retries[0]["data"]["operator"].startswith("key:")


async def test_escalation_fires_once_per_parked_step_and_flags_the_read_model(
    http: httpx.AsyncClient, stack: Stack, settings: Any
) -> None:
    try:
        [order_id] = await _parked_orders(http, stack, 1)
        row = await _row(http, order_id, "compensation_parked")

        async def escalated() -> dict[str, Any] | None:
            r = (await http.get(f"/sagas/{order_id}")).json()["saga"]
            return r if r["escalated_steps"] == ["charge"] else None

        row = await eventually(escalated, within=60)
        assert row["parked"][0]["escalated"] is True
        await asyncio.sleep(4)  # longer than the bound again: still once
        events = (await http.get(f"/sagas/{order_id}/events")).json()
        assert [
            e["data"]["step"] for e in events if e["event_type"] == "CompensationEscalated"
        ] == ["charge"]
        metrics = (await http.get("/metrics")).text
        assert 'sagaflow_escalated_steps{saga_type="OrderSaga"}' in metrics

        client = await Client.connect(stack.env["SAGAFLOW_TEMPORAL_ADDRESS"])

        async def visible() -> list[str] | None:
            found = [w.id async for w in client.list_workflows('SagaStatus="compensation_parked"')]
            return found if order_id in found else None

        await eventually(visible, within=30)
    finally:
        _outage_file(stack).unlink(missing_ok=True)
    resolved = await http.post(
        f"/sagas/{order_id}/resolve", json={"step": "charge", "note": "refunded by hand"}
    )
    assert resolved.status_code == 200 and resolved.json()["result"] == "resolved"
    await _row(http, order_id, "compensated")
