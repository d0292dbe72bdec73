"""End to end: what the OpenAPI contract promises beyond FastAPI's defaults: 400 for a
malformed body, 422 for an order without lines or a malformed token, links from a
placed order to the operations on it."""

from __future__ import annotations

import httpx
import pytest

from api.models import TOKEN_PATTERN

pytestmark = pytest.mark.integration


async def test_a_malformed_body_is_400_and_a_wrong_field_422(http: httpx.AsyncClient) -> None:
    for path in ("/orders", "/products", "/saga-types/OrderSaga/sagas", "/sagas/x/cancel"):
        broken = await http.post(
            path, content=b'{"customer_id": ', headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 400, (path, broken.text)
        assert broken.headers["content-type"].startswith("application/problem+json")
        assert broken.json()["title"] == "malformed body"
    empty = await http.post("/orders", json={"customer_id": "c-1", "lines": []})
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "lines"
    for malformed in ("not-a-token", "1~order-\x00x~1", "1~order-a~" + "9" * 20):
        # schemathesis: a NUL in the stream part was a 500 from PostgreSQL
        token = await http.get("/orders/o-1", params={"consistency_token": malformed})
        assert token.status_code == 422, (malformed, token.text)


async def test_the_schema_documents_400_and_links_a_placed_order_to_its_operations(
    http: httpx.AsyncClient,
) -> None:
    schema = (await http.get("/openapi.json")).json()
    place = schema["paths"]["/orders"]["post"]
    assert "400" in place["responses"]
    links = place["responses"]["202"]["links"]
    assert {links[n]["operationId"] for n in links} >= {
        "get_order",
        "get_order_saga",
        "get_order_events",
        "cancel_order",
        "ship_order",
        "deliver_order",
    }
    lines = schema["components"]["schemas"]["OrderCreate"]["properties"]["lines"]
    assert lines["minItems"] == 1
    accepted = schema["components"]["schemas"]["OrderAccepted"]["properties"]
    assert accepted["consistency_token"]["pattern"] == TOKEN_PATTERN
    with_body = [
        (path, method)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op and "400" not in op["responses"]
    ]
    assert with_body == []
    assert "/sagas/{saga_type}" not in schema["paths"], "ambiguous with /sagas/{saga_id}"


async def test_the_first_saga_start_path_answers_405_naming_the_get(
    http: httpx.AsyncClient,
) -> None:
    moved = await http.post("/sagas/OrderSaga", json={})
    assert moved.status_code == 405 and "GET" in moved.headers["allow"]
