"""bench.schemathesis_reach: a call counts as reaching a resource only with an id the
API handed out earlier, in a field of its kind, and a 2xx or 409 answer."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from bench.schemathesis_reach import load_entries, reach

SCHEMA: dict[str, Any] = {
    "paths": {
        "/orders": {"post": {}},
        "/orders/{order_id}": {"get": {}},
        "/orders/{order_id}/cancel": {"post": {}},
        "/products/{sku}": {"get": {}},
    }
}


def _entry(at: int, method: str, path: str, status: int, body: Any = None) -> dict[str, Any]:
    return {
        "startedDateTime": f"2026-12-02T05:00:{at:02d}+00:00",
        "request": {"method": method, "url": f"http://127.0.0.1:1{path}"},
        "response": {"status": status, "content": {"text": json.dumps(body)}},
    }


def test_only_handed_out_ids_of_the_right_kind_reach() -> None:
    entries = [
        _entry(1, "GET", "/orders/o-1", 404),  # before it was handed out
        _entry(2, "POST", "/orders", 202, {"order_id": "o-1", "sku": "s-1"}),
        _entry(3, "GET", "/orders/o-1", 200, {"order_id": "o-1"}),
        _entry(4, "POST", "/orders/o-1/cancel", 409),
        _entry(5, "POST", "/orders/o-1/cancel", 422),  # refused before the lookup
        _entry(6, "GET", "/orders/s-1", 404),  # a SKU is not an order id
        _entry(7, "GET", "/products/o-1", 404),
    ]
    table = reach(entries, SCHEMA)
    get, cancel = table[("GET", "/orders/{order_id}")], table[("POST", "/orders/{order_id}/cancel")]
    assert (get.calls, get.real, get.ok) == (3, 1, 1)
    assert (cancel.real, cancel.ok, cancel.conflict, cancel.reached) == (2, 0, 1, True)
    assert not table[("GET", "/products/{sku}")].reached
    since = reach(entries, SCHEMA, since=datetime.fromisoformat(entries[3]["startedDateTime"]))
    assert since[("GET", "/orders/{order_id}")].calls == 1


def test_a_har_file_still_being_written_gives_its_complete_entries() -> None:
    whole = json.dumps({"log": {"entries": [_entry(1, "GET", "/orders/o", 404)] * 2}}, indent=4)
    cut = whole[: whole.rindex('"status"')]
    assert len(load_entries(whole)) == 2
    assert len(load_entries(cut)) == 1
