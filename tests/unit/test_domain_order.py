"""Order aggregate: the happy path and every refused transition."""

import pytest

from domain import (
    CommandRefused,
    DomainError,
    IllegalTransition,
    Order,
    OrderCancelled,
    OrderCreated,
    OrderItemAdded,
    OrderSubmitted,
    StockAdded,
)


def draft(order_id: str = "o-1") -> Order:
    order = Order(order_id)
    order.create("c-1")
    return order


def submitted() -> Order:
    order = draft()
    order.add_item("MUG", "Mug", 2, 1250)
    order.add_item("TEA", "Tea", 1, 499)
    order.submit()
    return order


def paid() -> Order:
    order = submitted()
    order.receive_payment("p-1", order.total_cents)
    return order


def shipped() -> Order:
    order = paid()
    order.ship("TN-1", "DHL")
    return order


def delivered() -> Order:
    order = shipped()
    order.deliver()
    return order


def cancelled() -> Order:
    order = paid()
    order.cancel("customer asked")
    return order


def test_a_new_order_has_no_events_and_status_new():
    order = Order("o-1")
    assert (order.status, order.version, order.pending) == ("new", 0, [])


def test_creating_an_order_raises_order_created_and_makes_a_draft():
    order = draft()
    assert order.status == "draft"
    assert order.customer_id == "c-1"
    assert order.pending == [OrderCreated(order_id="o-1", customer_id="c-1")]
    assert order.version == 1


def test_refuses_to_create_an_order_twice():
    order = draft()
    with pytest.raises(IllegalTransition, match="Order o-1 is draft: cannot create"):
        order.create("c-2")


def test_refuses_an_order_without_a_customer():
    with pytest.raises(CommandRefused, match="customer_id must not be empty"):
        Order("o-1").create(" ")


def test_submitting_fixes_the_total_from_the_lines():
    order = submitted()
    assert order.status == "submitted"
    assert order.total_cents == 2 * 1250 + 499
    assert order.pending[-1] == OrderSubmitted(total_cents=2999)
    assert order.lines["MUG"].quantity == 2
    assert order.lines["MUG"].unit_price_cents == 1250
    assert order.lines["MUG"].name == "Mug"


def test_removing_an_item_drops_its_line_and_its_share_of_the_total():
    order = draft()
    order.add_item("MUG", "Mug", 2, 1250)
    order.add_item("TEA", "Tea", 1, 499)
    order.remove_item("MUG")
    assert list(order.lines) == ["TEA"]
    assert order.total_cents == 499


def test_refuses_a_duplicate_line():
    order = draft()
    order.add_item("MUG", "Mug", 1, 1250)
    with pytest.raises(CommandRefused, match="is draft: cannot add_item: duplicate line"):
        order.add_item("MUG", "Mug", 3, 1250)


def test_refuses_to_remove_an_sku_that_is_not_on_the_order():
    with pytest.raises(CommandRefused, match="is draft: cannot remove_item: sku TEA"):
        draft().remove_item("TEA")


@pytest.mark.parametrize("quantity", [0, -1])
def test_refuses_a_line_without_a_positive_quantity(quantity):
    with pytest.raises(CommandRefused, match="quantity must be positive"):
        draft().add_item("MUG", "Mug", quantity, 1250)


def test_refuses_a_negative_unit_price():
    with pytest.raises(CommandRefused, match="unit_price_cents must not be negative"):
        draft().add_item("MUG", "Mug", 1, -1)


def test_refuses_to_submit_an_empty_order():
    with pytest.raises(CommandRefused, match="Order o-1 is draft: cannot submit: the order has no"):
        draft().submit()


def test_refuses_to_add_items_after_submission():
    with pytest.raises(IllegalTransition, match="is submitted: cannot add_item"):
        submitted().add_item("CUP", "Cup", 1, 100)


def test_refuses_to_remove_items_after_submission():
    with pytest.raises(IllegalTransition, match="is submitted: cannot remove_item"):
        submitted().remove_item("MUG")


def test_refuses_payment_for_a_draft_order():
    with pytest.raises(IllegalTransition, match="is draft: cannot receive_payment"):
        draft().receive_payment("p-1", 100)


def test_refuses_a_payment_that_does_not_match_the_total():
    with pytest.raises(CommandRefused, match="does not match the total 2999"):
        submitted().receive_payment("p-1", 2998)


def test_ships_and_delivers_a_paid_order():
    order = delivered()
    assert order.status == "delivered"
    assert (order.tracking_number, order.carrier, order.payment_id) == ("TN-1", "DHL", "p-1")


def test_refuses_to_ship_an_unpaid_order():
    with pytest.raises(IllegalTransition, match="Order o-1 is submitted: cannot ship"):
        submitted().ship("TN-1", "DHL")


def test_refuses_to_ship_a_cancelled_order():
    with pytest.raises(IllegalTransition) as info:
        cancelled().ship("TN-1", "DHL")
    error = info.value
    assert (error.aggregate, error.aggregate_id, error.state, error.command) == (
        "Order",
        "o-1",
        "cancelled",
        "ship",
    )
    assert str(error) == "Order o-1 is cancelled: cannot ship"


def test_refuses_to_ship_without_a_tracking_number():
    with pytest.raises(CommandRefused, match="tracking_number must not be empty"):
        paid().ship("", "DHL")


def test_refuses_to_deliver_an_order_that_has_not_shipped():
    with pytest.raises(IllegalTransition, match="is paid: cannot deliver"):
        paid().deliver()


@pytest.mark.parametrize("make", [draft, submitted, paid], ids=lambda f: f.__name__)
def test_cancels_an_order_that_has_not_shipped(make):
    order = make()
    order.cancel("out of stock")
    assert order.status == "cancelled"
    assert order.pending[-1] == OrderCancelled(reason="out of stock")


@pytest.mark.parametrize(
    ("make", "state"),
    [(shipped, "shipped"), (delivered, "delivered"), (cancelled, "cancelled")],
    ids=["shipped", "delivered", "cancelled"],
)
def test_refuses_to_cancel_an_order_that_shipped_or_was_cancelled(make, state):
    with pytest.raises(IllegalTransition, match=f"Order o-1 is {state}: cannot cancel"):
        make().cancel("too late")


def test_refuses_to_cancel_an_order_that_does_not_exist():
    with pytest.raises(IllegalTransition, match="is new: cannot cancel"):
        Order("o-1").cancel("nothing to cancel")


def test_a_refused_command_leaves_the_order_unchanged():
    order = submitted()
    before = (order.state_dict(), list(order.pending))
    with pytest.raises(DomainError):
        order.ship("TN-1", "DHL")
    assert (order.state_dict(), order.pending) == before


def test_loading_replays_events_and_leaves_nothing_pending():
    original = delivered()
    events = original.clear_pending()
    assert original.pending == []
    loaded = Order.load("o-1", events)
    assert loaded.state_dict() == original.state_dict()
    assert loaded.pending == []
    assert loaded.version == len(events)


def test_expected_version_is_the_version_before_the_pending_events():
    order = Order.load("o-1", draft().clear_pending())
    order.add_item("MUG", "Mug", 1, 100)
    order.submit()
    assert (order.version, order.expected_version) == (3, 1)


def test_a_snapshot_restores_the_same_state():
    original = paid()
    restored = Order.from_snapshot("o-1", original.version, original.snapshot_state())
    assert restored.state_dict() == original.state_dict()
    assert restored.lines == original.lines


def test_applying_an_event_of_another_aggregate_is_refused():
    with pytest.raises(DomainError, match="cannot apply event 'StockAdded'"):
        draft().apply(StockAdded(quantity=1))


def test_an_added_item_event_is_priced_as_given():
    order = draft()
    order.add_item("MUG", "Mug", 3, 100)
    assert order.pending[-1] == OrderItemAdded(
        sku="MUG", name="Mug", quantity=3, unit_price_cents=100
    )
