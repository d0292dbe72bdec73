"""The baseline for ``bench.api``: a bare FastAPI route returning a constant."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()
CONSTANT = {"order_id": "x", "status": "paid", "total_cents": 2500, "lines": []}


@app.get("/orders/{order_id}")
async def order(order_id: str) -> dict[str, Any]:
    """Always the same body: the cost of FastAPI + uvicorn alone."""
    return CONSTANT
