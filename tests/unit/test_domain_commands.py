"""Command models and PlaceOrder validation."""

import pytest
from pydantic import ValidationError

from domain import (
    CancelOrder,
    InvalidCommand,
    OrderLine,
    PlaceOrder,
    RegisterProduct,
    Restock,
    ShipOrder,
    require_known_skus,
    validate_place_order,
)

LIMITS = {"max_lines": 3, "max_units": 10}


def place(*lines: tuple[str, int], customer_id: str = "c-1") -> PlaceOrder:
    return PlaceOrder(
        order_id="o-1",
        customer_id=customer_id,
        lines=[OrderLine(sku=sku, quantity=quantity) for sku, quantity in lines],
    )


def problems(cmd: PlaceOrder, **kwargs) -> list[str]:
    with pytest.raises(InvalidCommand) as info:
        validate_place_order(cmd, **{**LIMITS, **kwargs})
    return info.value.problems


def test_accepts_a_valid_order():
    order = place(("MUG", 2), ("TEA", 1))
    validate_place_order(order, **LIMITS)
    require_known_skus(order, {"MUG", "TEA"})


def test_errors_for_an_order_without_lines():
    assert problems(place()) == ["the order has no lines"]


def test_errors_for_a_non_positive_quantity_naming_the_line_and_sku():
    assert problems(place(("MUG", 1), ("TEA", 0))) == [
        "line 1 (sku TEA): quantity must be positive, got 0"
    ]


def test_errors_for_a_duplicate_sku():
    assert problems(place(("MUG", 1), ("MUG", 2))) == [
        "line 1 (sku MUG): duplicate sku, already on line 0"
    ]


def test_errors_for_too_many_lines():
    assert problems(place(("A", 1), ("B", 1), ("C", 1), ("D", 1))) == [
        "the order has 4 lines, more than max_lines 3"
    ]


def test_errors_for_too_many_units():
    assert problems(place(("A", 6), ("B", 5))) == ["the order has 11 units, more than max_units 10"]


def test_errors_for_every_unknown_sku_naming_its_line():
    with pytest.raises(InvalidCommand) as info:
        require_known_skus(place(("MUG", 1), ("GHOST", 1), ("NOPE", 1)), {"MUG"})
    assert info.value.problems == [
        "line 1 (sku GHOST): unknown sku",
        "line 2 (sku NOPE): unknown sku",
    ]


def test_errors_for_an_empty_customer_id():
    assert problems(place(("MUG", 1), customer_id="  ")) == ["customer_id must not be empty"]


def test_reports_every_problem_at_once():
    found = problems(place(("X", -1), ("X", 2), customer_id=""))
    assert found == [
        "customer_id must not be empty",
        "line 0 (sku X): quantity must be positive, got -1",
        "line 1 (sku X): duplicate sku, already on line 0",
    ]


def test_invalid_command_message_joins_the_problems():
    error = InvalidCommand(["a is wrong", "b is wrong"])
    assert str(error) == "a is wrong; b is wrong"


@pytest.mark.parametrize("sku", ["", "has space", "x" * 65, "emoji-☕"])
def test_rejects_a_malformed_sku(sku):
    with pytest.raises(ValidationError):
        OrderLine(sku=sku, quantity=1)


def test_accepts_skus_with_dots_dashes_and_underscores():
    assert RegisterProduct(sku="A.b-c_9", name="Thing", unit_price_cents=0).sku == "A.b-c_9"


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (Restock, {"sku": "MUG", "quantity": 0}),
        (RegisterProduct, {"sku": "MUG", "name": "Mug", "unit_price_cents": -1}),
        (RegisterProduct, {"sku": "MUG", "name": "", "unit_price_cents": 1}),
        (ShipOrder, {"tracking_number": "", "carrier": "DHL"}),
        (CancelOrder, {"reason": ""}),
        (CancelOrder, {"reason": "ok", "extra": 1}),
        (PlaceOrder, {"order_id": "bad id", "customer_id": "c", "lines": []}),
    ],
)
def test_rejects_input_that_breaks_field_constraints(model, data):
    with pytest.raises(ValidationError):
        model.model_validate(data)
