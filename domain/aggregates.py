"""The aggregates and the stream-type registry the event store loads them by.

The base class lives in ``domain.aggregate`` and each aggregate in its own module;
this module gathers them under one import.
"""

from __future__ import annotations

from domain.aggregate import Aggregate
from domain.inventory import Inventory, Reservation
from domain.order import ORDER_STATES, LineItem, Order
from domain.payment import PAYMENT_STATES, Payment
from domain.returns import RETURN_STATES, Return

AGGREGATE_TYPES: dict[str, type[Aggregate]] = {
    cls.stream_type: cls for cls in (Order, Inventory, Payment, Return)
}
"""Aggregate class by ``stream_type``."""

__all__ = [
    "AGGREGATE_TYPES",
    "ORDER_STATES",
    "PAYMENT_STATES",
    "RETURN_STATES",
    "Aggregate",
    "Inventory",
    "LineItem",
    "Order",
    "Payment",
    "Reservation",
    "Return",
]
