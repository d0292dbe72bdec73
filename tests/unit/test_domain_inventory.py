"""Inventory aggregate: catalogue, reservations and stock conservation."""

import contextlib

import pytest

from domain import (
    CommandRefused,
    DomainError,
    IllegalTransition,
    InsufficientStock,
    Inventory,
    Reservation,
    StockReservationReleased,
    StockSold,
)


def stocked(quantity: int = 10) -> Inventory:
    inventory = Inventory("MUG")
    inventory.register("Mug", 1250)
    inventory.add_stock(quantity)
    return inventory


def assert_conserved(inventory: Inventory) -> None:
    assert inventory.available + inventory.reserved + inventory.sold == inventory.stocked
    assert inventory.reserved == sum(r.quantity for r in inventory.reservations.values())
    assert min(inventory.available, inventory.reserved, inventory.sold) >= 0


def test_registers_a_product_with_its_name_and_price():
    inventory = Inventory("MUG")
    inventory.register("Mug", 1250)
    assert (inventory.sku, inventory.name, inventory.unit_price_cents) == ("MUG", "Mug", 1250)


def test_refuses_to_register_a_product_twice():
    inventory = stocked()
    with pytest.raises(IllegalTransition, match="Inventory MUG is registered: cannot register"):
        inventory.register("Mug again", 1)


def test_changes_the_price_of_a_registered_product():
    inventory = stocked()
    inventory.change_price(1300)
    assert inventory.unit_price_cents == 1300


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("add_stock", (1,)),
        ("change_price", (1,)),
        ("reserve", ("r-1", "o-1", 1)),
        ("release", ("r-1",)),
        ("sell", ("r-1",)),
    ],
)
def test_refuses_every_stock_command_before_registration(command, args):
    with pytest.raises(IllegalTransition, match=f"MUG is unregistered: cannot {command}"):
        getattr(Inventory("MUG"), command)(*args)


def test_refuses_to_add_zero_units():
    with pytest.raises(CommandRefused, match="is registered: cannot add_stock: quantity"):
        stocked().add_stock(0)


def test_reserving_moves_units_from_available_to_reserved():
    inventory = stocked(10)
    inventory.reserve("r-1", "o-1", 4)
    assert (inventory.available, inventory.reserved, inventory.sold) == (6, 4, 0)
    assert inventory.reservations == {"r-1": Reservation("o-1", 4)}
    assert inventory.reservations["r-1"] == ("o-1", 4)


def test_refuses_to_reserve_more_than_available():
    inventory = stocked(3)
    with pytest.raises(InsufficientStock) as info:
        inventory.reserve("r-1", "o-1", 5)
    error = info.value
    assert (error.sku, error.requested, error.available) == ("MUG", 5, 3)
    assert (error.state, error.command) == ("registered", "reserve")
    assert "requested 5, available 3" in str(error)


def test_refuses_to_reserve_with_an_open_reservation_id():
    inventory = stocked()
    inventory.reserve("r-1", "o-1", 1)
    with pytest.raises(CommandRefused, match="cannot reserve: reservation r-1 already exists"):
        inventory.reserve("r-1", "o-2", 1)


def test_releasing_returns_the_units_to_available_stock():
    inventory = stocked(10)
    inventory.reserve("r-1", "o-1", 4)
    inventory.release("r-1")
    assert (inventory.available, inventory.reserved, inventory.reservations) == (10, 0, {})
    assert inventory.pending[-1] == StockReservationReleased(
        reservation_id="r-1", order_id="o-1", quantity=4
    )


def test_refuses_to_release_an_unknown_reservation():
    with pytest.raises(CommandRefused, match="cannot release: no open reservation r-9"):
        stocked().release("r-9")


def test_refuses_to_release_a_reservation_twice():
    inventory = stocked()
    inventory.reserve("r-1", "o-1", 1)
    inventory.release("r-1")
    with pytest.raises(CommandRefused, match="cannot release: no open reservation r-1"):
        inventory.release("r-1")


def test_selling_turns_a_reservation_into_sold_units():
    inventory = stocked(10)
    inventory.reserve("r-1", "o-1", 4)
    inventory.sell("r-1")
    assert (inventory.available, inventory.reserved, inventory.sold) == (6, 0, 4)
    assert inventory.pending[-1] == StockSold(reservation_id="r-1", order_id="o-1", quantity=4)


def test_refuses_to_release_a_sold_reservation():
    inventory = stocked()
    inventory.reserve("r-1", "o-1", 1)
    inventory.sell("r-1")
    with pytest.raises(CommandRefused, match="cannot release"):
        inventory.release("r-1")
    with pytest.raises(CommandRefused, match="cannot sell"):
        inventory.sell("r-1")


def test_stock_is_conserved_through_a_mixed_sequence():
    inventory = stocked(10)
    steps = [
        lambda: inventory.reserve("r-1", "o-1", 3),
        lambda: inventory.reserve("r-2", "o-2", 5),
        lambda: inventory.reserve("r-3", "o-3", 5),  # insufficient
        lambda: inventory.sell("r-1"),
        lambda: inventory.add_stock(4),
        lambda: inventory.release("r-2"),
        lambda: inventory.release("r-2"),  # already released
        lambda: inventory.reserve("r-3", "o-3", 11),
    ]
    for step in steps:
        with contextlib.suppress(DomainError):
            step()
        assert_conserved(inventory)
    assert (inventory.stocked, inventory.available, inventory.reserved, inventory.sold) == (
        14,
        0,
        11,
        3,
    )


def test_a_snapshot_keeps_the_totals_and_leaves_the_reservations_out():
    inventory = stocked()
    inventory.reserve("r-1", "o-1", 2)
    inventory.restock_return("ret-1", "o-0", 1)
    state = inventory.snapshot_state()
    assert "reservations" not in state and "returns" not in state
    restored = Inventory.from_snapshot("MUG", inventory.version, state)
    assert restored.state_dict() == inventory.state_dict()
    assert (restored.available, restored.reserved, restored.stocked) == (9, 2, 11)


def test_after_a_snapshot_a_reservation_is_answered_only_once_its_events_are_loaded():
    inventory = stocked()
    inventory.reserve("r-1", "o-1", 2)
    history = list(inventory.clear_pending())
    restored = Inventory.from_snapshot("MUG", inventory.version, inventory.snapshot_state())
    with pytest.raises(RuntimeError, match="without reservation_id 'r-1'"):
        restored.reservation("r-1")
    with pytest.raises(RuntimeError, match="without reservation_id 'r-1'"):
        restored.release("r-1")
    with pytest.raises(RuntimeError, match="use_snapshot=False"):
        _ = restored.reservations
    restored.load_entity(
        "reservation_id", "r-1", [e for e in history if e.event_type == "StockReserved"]
    )
    assert restored.reservation("r-1") == Reservation("o-1", 2)
    restored.release("r-1")
    assert (restored.available, restored.reserved) == (10, 0)


def test_a_reservation_loaded_after_a_snapshot_refuses_a_second_reserve():
    inventory = stocked()
    inventory.reserve("r-1", "o-1", 2)
    history = list(inventory.clear_pending())
    restored = Inventory.from_snapshot("MUG", inventory.version, inventory.snapshot_state())
    restored.load_entity("reservation_id", "r-1", history[2:])
    with pytest.raises(CommandRefused, match="reservation r-1 already exists"):
        restored.reserve("r-1", "o-1", 2)


def test_events_after_the_snapshot_close_reservations_it_never_loaded():
    inventory = stocked()
    inventory.reserve("r-1", "o-1", 2)
    restored = Inventory.from_snapshot("MUG", inventory.version, inventory.snapshot_state())
    restored.apply(StockSold(reservation_id="r-1", order_id="o-1", quantity=2))
    assert (restored.reserved, restored.sold) == (0, 2)


def test_loading_a_sub_entity_the_aggregate_does_not_have_is_refused():
    restored = Inventory.from_snapshot("MUG", 3, stocked().snapshot_state())
    with pytest.raises(ValueError, match="no sub-entities keyed by 'order_id'"):
        restored.load_entity("order_id", "o-1", [])
