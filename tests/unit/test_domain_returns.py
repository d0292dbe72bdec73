"""Returns: the Order's rule (returned <= delivered across all returns), the Return
state machine and restocking on the Inventory."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import CommandRefused, IllegalTransition, InsufficientStock, Inventory, Order
from domain.events import ReturnLine
from domain.returns import Return


def delivered(quantities: dict[str, int] | None = None) -> Order:
    order = Order("o-1")
    order.create("c-1")
    for sku, quantity in (quantities or {"MUG": 2, "TEA": 1}).items():
        order.add_item(sku, sku.title(), quantity, 1000)
    order.submit()
    order.receive_payment("p-1", order.total_cents)
    order.ship("TN-1", "DHL")
    order.deliver()
    order.clear_pending()
    return order


def test_a_delivered_order_accepts_a_return_of_its_units():
    order = delivered()
    order.register_return("r-1", {"MUG": 2})
    assert order.returnable_units("MUG") == 0
    assert order.returnable_units("TEA") == 1


def test_an_order_not_delivered_refuses_a_return():
    order = delivered()
    shipped = Order.load("o-1", [])
    with pytest.raises(IllegalTransition, match="cannot return"):
        shipped.register_return("r-1", {"MUG": 1})
    assert order.status == "delivered"


def test_a_return_of_more_units_than_delivered_is_refused_and_changes_nothing():
    order = delivered()
    with pytest.raises(CommandRefused, match="3 units of MUG exceed the 2 returnable"):
        order.register_return("r-1", {"MUG": 3})
    assert order.pending == [] and order.returns == {}


def test_units_returned_across_returns_never_exceed_units_delivered():
    order = delivered()
    order.register_return("r-1", {"MUG": 1})
    with pytest.raises(CommandRefused, match="1 already returned"):
        order.register_return("r-2", {"MUG": 2})
    order.register_return("r-2", {"MUG": 1})


def test_a_released_return_gives_its_units_back():
    order = delivered()
    order.register_return("r-1", {"MUG": 2})
    order.release_return("r-1")
    assert order.returnable_units("MUG") == 2
    with pytest.raises(CommandRefused):
        order.release_return("r-1")


def test_a_return_of_a_sku_not_on_the_order_is_refused():
    with pytest.raises(CommandRefused, match="not on the order"):
        delivered().register_return("r-1", {"HAT": 1})


def test_order_snapshot_keeps_the_returns():
    order = delivered()
    order.register_return("r-1", {"MUG": 1})
    restored = Order.from_snapshot("o-1", order.version, order.snapshot_state())
    assert restored.state_dict() == order.state_dict()


@given(st.lists(st.tuples(st.sampled_from(["MUG", "TEA"]), st.integers(1, 4), st.booleans())))
def test_returned_units_never_exceed_delivered_units(attempts):
    order = delivered({"MUG": 3, "TEA": 2})
    for n, (sku, quantity, release) in enumerate(attempts):
        try:
            order.register_return(f"r-{n}", {sku: quantity})
        except CommandRefused:
            continue
        if release:
            order.release_return(f"r-{n}")
        for line in order.lines.values():
            assert 0 <= order.returned_units(line.sku) <= line.quantity
    replayed = Order.load("o-1", [])
    assert replayed.returns == {}


def opened() -> Return:
    ret = Return("r-1")
    ret.open("o-1", "c-1", "too small", [ReturnLine(sku="MUG", quantity=2, unit_price_cents=1000)])
    return ret


def test_a_return_goes_from_opened_to_completed():
    ret = opened()
    assert ret.total_cents == 2000
    ret.receive()
    ret.refund("p-1", 2000)
    ret.complete()
    assert ret.status == "completed"
    assert Return.load("r-1", ret.pending).state_dict() == ret.state_dict()


def test_a_return_expires_only_while_waiting_for_the_goods():
    ret = opened()
    ret.expire("deadline")
    assert ret.status == "expired"
    with pytest.raises(IllegalTransition):
        ret.receive()


def test_a_refunded_return_cannot_be_cancelled():
    ret = opened()
    ret.receive()
    ret.refund("p-1", 2000)
    with pytest.raises(IllegalTransition):
        ret.cancel("too late")


def test_a_refund_must_match_the_return_total():
    ret = opened()
    ret.receive()
    with pytest.raises(CommandRefused, match="does not match"):
        ret.refund("p-1", 1)


def stocked() -> Inventory:
    inv = Inventory("MUG")
    inv.register("Mug", 1000)
    inv.add_stock(5)
    return inv


def test_restocking_a_return_adds_available_units_once():
    inv = stocked()
    inv.restock_return("r-1", "o-1", 2)
    assert (inv.available, inv.stocked) == (7, 7)
    with pytest.raises(CommandRefused):
        inv.restock_return("r-1", "o-1", 2)


def test_reversing_a_restock_removes_the_units_again():
    inv = stocked()
    inv.restock_return("r-1", "o-1", 2)
    inv.reverse_return("r-1")
    assert (inv.available, inv.stocked) == (5, 5)
    with pytest.raises(CommandRefused):
        inv.reverse_return("r-1")


def test_a_reversal_refuses_when_the_units_were_reserved_meanwhile():
    inv = stocked()
    inv.restock_return("r-1", "o-1", 2)
    inv.reserve("res-1", "o-2", 7)
    with pytest.raises(InsufficientStock):
        inv.reverse_return("r-1")
