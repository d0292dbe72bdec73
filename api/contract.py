"""What FastAPI cannot say by itself in the OpenAPI schema: the 400 a malformed body
gets, and the links from a created resource to the operations on it.

Why links: a stateful tester (schemathesis' stateful phase) follows them to call
``GET /orders/{order_id}``, ``/cancel`` or ``/sagas/{saga_id}/plan`` with ids the API
really handed out, instead of random ids that only ever reach the 404 branch. They
chain: a restocked SKU is ordered, the order shipped, delivered, returned, its return
received; a placed order's saga, and the sagas a list shows, are read and cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.errors import PROBLEM

_BODY_400 = {
    "description": "malformed body (not JSON, or not the media type declared)",
    "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}

# (operation id of the source, response status) → {link name: (target operation id,
# parameters, request body)}; values are OpenAPI runtime expressions.
_ORDER = {"order_id": "$response.body#/order_id"}
_SKU = {"sku": "$response.body#/sku"}
_RETURN = {"return_id": "$response.body#/return_id"}
_SAME_ORDER = {"order_id": "$request.path.order_id"}
_FIRST_LETTER = {"dead_letter_id": "$response.body#/0/id"}


@dataclass(frozen=True)
class WholeBody:
    """A link's request body sent as it is (by default schemathesis merges a link's
    body into a generated one, keeping generated extra list items: random SKUs)."""

    value: dict[str, Any]


def _saga_ops(saga_id: str) -> dict[str, tuple[str, dict[str, str], Any]]:
    """The operations on one saga, its id taken by ``saga_id`` (an expression)."""
    ids = {"saga_id": saga_id}
    return {
        "GetSaga": ("get_saga", ids, None),
        "GetSagaPlan": ("saga_plan", ids, None),
        "GetSagaEvents": ("saga_events", ids, None),
        "CancelSaga": ("cancel_saga", ids, None),
    }


LINKS: dict[tuple[str, str], dict[str, tuple[str, dict[str, str], Any]]] = {
    ("place_order", "202"): {
        "GetOrder": ("get_order", _ORDER, None),
        "GetOrderSaga": ("get_order_saga", _ORDER, None),
        "GetOrderEvents": ("get_order_events", _ORDER, None),
        "CancelOrder": ("cancel_order", _ORDER, None),
        "ShipOrder": ("ship_order", _ORDER, None),
        "DeliverOrder": ("deliver_order", _ORDER, None),
        "OpenReturn": ("open_return", _ORDER, None),
        "CustomerOrders": (
            "customer_orders",
            {"customer_id": "$request.body#/customer_id"},
            None,
        ),
        # An order's saga has the order's id.
        **_saga_ops("$response.body#/order_id"),
    },
    # A shipped order can be delivered; a delivered one returned.
    ("ship_order", "200"): {"DeliverOrder": ("deliver_order", _SAME_ORDER, None)},
    ("deliver_order", "200"): {
        "OpenReturn": ("open_return", _SAME_ORDER, None),
        "GetOrder": ("get_order", _SAME_ORDER, None),
    },
    ("open_return", "202"): {
        "GetReturn": ("get_return", _RETURN, None),
        "ReceiveReturn": ("receive_return", _RETURN, None),
    },
    # A saga type's input cannot be generated from the schema (it is the type's own
    # model); a trip is self-contained (no catalogue), so the link gives one whole.
    # The same trip id again is the same saga (202), so repeats add no workflows.
    ("saga_types", "200"): {
        "StartTrip": (
            "start_saga",
            {"saga_type": "TripSaga"},
            WholeBody(
                {
                    "trip_id": "t-links",
                    "traveler_id": "tr-links",
                    "origin": "LIS",
                    "destination": "OSL",
                    "depart_on": "2027-03-01",
                    "return_on": "2027-03-08",
                    "flight_cents": 30000,
                    "hotel_cents": 70000,
                    "car_cents": 20000,
                }
            ),
        ),
    },
    ("start_saga", "202"): _saga_ops("$response.body#/saga_id"),
    ("list_sagas", "200"): _saga_ops("$response.body#/items/0/saga_id"),
    ("register_product", "201"): {
        "GetProduct": ("get_product", _SKU, None),
        "Restock": ("restock", _SKU, None),
        "GetInventory": ("get_inventory", _SKU, None),
    },
    # A restocked SKU can be ordered: an order the saga can fulfil, with a real id.
    ("restock", "200"): {
        "PlaceOrder": (
            "place_order",
            {},
            WholeBody(
                {"customer_id": "c-links", "lines": [{"sku": "$response.body#/sku", "quantity": 1}]}
            ),
        ),
    },
    ("dead_letters", "200"): {
        "ReplayDeadLetter": ("replay_dead_letter", _FIRST_LETTER, None),
        "SkipDeadLetter": ("skip_dead_letter", _FIRST_LETTER, None),
    },
    ("parked", "200"): {
        name: (
            target,
            {"saga_id": "$response.body#/0/saga_id"},
            {"step": "$response.body#/0/step", "note": "from the inbox"},
        )
        for name, target in (
            ("RetryParked", "retry_compensation"),
            ("ResolveParked", "resolve_compensation"),
            ("SkipParked", "skip_compensation"),
        )
    },
}


def refine(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the 400 to every operation with a body, and the links, to ``schema``."""
    by_id = {op["operationId"]: op for ops in schema["paths"].values() for op in ops.values()}
    for op in by_id.values():
        if "requestBody" in op:
            op["responses"].setdefault("400", _BODY_400)
    for (source, status), links in LINKS.items():
        response = by_id[source]["responses"][status]
        response["links"] = {name: _link(*link) for name, link in links.items()}
    return schema


def _link(target: str, params: dict[str, str], body: Any) -> dict[str, Any]:
    link: dict[str, Any] = {"operationId": target, "parameters": params}
    if isinstance(body, WholeBody):
        link["requestBody"] = body.value
        link["x-schemathesis"] = {"merge_body": False}
    elif body is not None:
        link["requestBody"] = body
    return link
