"""What FastAPI cannot say by itself in the OpenAPI schema: the 400 a malformed body
gets, and the links from a created resource to the operations on it.

Why links: a stateful tester (schemathesis' stateful phase) follows them to call
``GET /orders/{order_id}``, ``/cancel`` or ``/sagas/{saga_id}/plan`` with ids the API
really handed out, instead of random ids that only ever reach the 404 branch.
"""

from __future__ import annotations

from typing import Any

from api.errors import PROBLEM

_BODY_400 = {
    "description": "malformed body (not JSON, or not the media type declared)",
    "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}

# (operation id of the source, response status) → {link name: (target operation id,
# parameters, request body)}; values are OpenAPI runtime expressions.
_ORDER = {"order_id": "$response.body#/order_id"}
_SAGA = {"saga_id": "$response.body#/saga_id"}
_SKU = {"sku": "$response.body#/sku"}
_FIRST_LETTER = {"dead_letter_id": "$response.body#/0/id"}
LINKS: dict[tuple[str, str], dict[str, tuple[str, dict[str, str], Any]]] = {
    ("place_order", "202"): {
        "GetOrder": ("get_order", _ORDER, None),
        "GetOrderSaga": ("get_order_saga", _ORDER, None),
        "GetOrderEvents": ("get_order_events", _ORDER, None),
        "CancelOrder": ("cancel_order", _ORDER, None),
        "ShipOrder": ("ship_order", _ORDER, None),
        "DeliverOrder": ("deliver_order", _ORDER, None),
        "GetSaga": ("get_saga", {"saga_id": "$response.body#/order_id"}, None),
    },
    ("start_saga", "202"): {
        "GetSaga": ("get_saga", _SAGA, None),
        "GetSagaPlan": ("saga_plan", _SAGA, None),
        "GetSagaEvents": ("saga_events", _SAGA, None),
        "CancelSaga": ("cancel_saga", _SAGA, None),
    },
    ("register_product", "201"): {
        "GetProduct": ("get_product", _SKU, None),
        "Restock": ("restock", _SKU, None),
        "GetInventory": ("get_inventory", _SKU, None),
    },
    ("dead_letters", "200"): {
        "ReplayDeadLetter": (
            "replay_dead_letter",
            {"dead_letter_id": "$response.body#/0/id"},
            None,
        ),
        "SkipDeadLetter": ("skip_dead_letter", {"dead_letter_id": "$response.body#/0/id"}, None),
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
        response["links"] = {
            name: {
                "operationId": target,
                "parameters": params,
                **({"requestBody": body} if body is not None else {}),
            }
            for name, (target, params, body) in links.items()
        }
    return schema
