"""Commands: imperative input models, validated before any workflow starts.

Field constraints catch malformed input (pydantic ``ValidationError``); the rules
that need limits live in ``validate_place_order`` (no I/O), the catalogue check in
``require_known_skus``; each reports every problem at once as ``InvalidCommand``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.errors import InvalidCommand

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
]
"""An id safe in stream ids, workflow ids and URLs: 1-64 of ``[A-Za-z0-9._-]``."""

Sku = Identifier
"""A stock-keeping unit code."""


class Command(BaseModel):
    """Base of command models: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class OrderLine(Command):
    """One requested line; ``quantity`` is checked by ``validate_place_order``."""

    sku: Sku
    quantity: int


class PlaceOrder(Command):
    """Place an order: starts the order saga."""

    order_id: Identifier
    customer_id: Annotated[str, StringConstraints(max_length=64)]
    lines: list[OrderLine]


class ShipOrder(Command):
    """Ship a paid order."""

    tracking_number: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    carrier: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class CancelOrder(Command):
    """Cancel an order that has not shipped."""

    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class RegisterProduct(Command):
    """Add a SKU to the catalogue."""

    sku: Sku
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    unit_price_cents: Annotated[int, Field(ge=0)]


class Restock(Command):
    """Add units of a SKU to stock."""

    sku: Sku
    quantity: Annotated[int, Field(gt=0, le=1_000_000)]


def validate_place_order(cmd: PlaceOrder, *, max_lines: int, max_units: int) -> None:
    """Raise ``InvalidCommand`` listing every shape problem with ``cmd``; return if none.

    Shape only (limits, duplicates, quantities, empty lines): no catalogue, so a
    refused order costs no I/O. Then ``require_known_skus`` with one batched look-up.
    """
    problems: list[str] = []
    if not cmd.customer_id.strip():
        problems.append("customer_id must not be empty")
    if not cmd.lines:
        problems.append("the order has no lines")
    if len(cmd.lines) > max_lines:
        problems.append(f"the order has {len(cmd.lines)} lines, more than max_lines {max_lines}")
    first_line: dict[str, int] = {}
    for index, line in enumerate(cmd.lines):
        if line.quantity <= 0:
            problems.append(
                f"line {index} (sku {line.sku}): quantity must be positive, got {line.quantity}"
            )
        if line.sku in first_line:
            problems.append(
                f"line {index} (sku {line.sku}): duplicate sku, "
                f"already on line {first_line[line.sku]}"
            )
            continue
        first_line[line.sku] = index
    units = sum(line.quantity for line in cmd.lines if line.quantity > 0)
    if units > max_units:
        problems.append(f"the order has {units} units, more than max_units {max_units}")
    if problems:
        raise InvalidCommand(problems)


def require_known_skus(cmd: PlaceOrder, known_skus: Collection[str]) -> None:
    """Raise ``InvalidCommand`` naming every line whose SKU is not in ``known_skus``."""
    problems = [
        f"line {index} (sku {line.sku}): unknown sku"
        for index, line in enumerate(cmd.lines)
        if line.sku not in known_skus
    ]
    if problems:
        raise InvalidCommand(problems)
