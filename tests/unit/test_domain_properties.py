"""Property tests: any command sequence replays, snapshots and conserves stock.

Commands are drawn valid and invalid alike; refused ones (DomainError) are skipped,
as a workflow would treat them as business failures.
"""

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import Aggregate, DomainError, Inventory, Order, Payment, event_class

PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)

ids = st.sampled_from(["a", "b", "c", ""])
small_ints = st.integers(min_value=-2, max_value=12)
text = st.sampled_from(["x", "why", " "])

order_commands = st.one_of(
    st.tuples(st.just("create"), st.tuples(st.sampled_from(["c-1", ""]))),
    st.tuples(
        st.just("add_item"),
        st.tuples(ids, st.just("Thing"), small_ints, st.integers(min_value=-1, max_value=999)),
    ),
    st.tuples(st.just("remove_item"), st.tuples(ids)),
    st.tuples(st.just("submit"), st.just(())),
    # None stands for "the order's current total", so paid orders are reached often.
    st.tuples(st.just("receive_payment"), st.tuples(ids, st.none() | small_ints)),
    st.tuples(st.just("ship"), st.tuples(st.sampled_from(["TN-1", ""]), st.just("DHL"))),
    st.tuples(st.just("deliver"), st.just(())),
    st.tuples(st.just("cancel"), st.tuples(text)),
)

inventory_commands = st.one_of(
    st.tuples(st.just("register"), st.tuples(text, small_ints)),
    st.tuples(st.just("change_price"), st.tuples(small_ints)),
    st.tuples(st.just("add_stock"), st.tuples(small_ints)),
    st.tuples(st.just("reserve"), st.tuples(ids, st.sampled_from(["o-1", "o-2"]), small_ints)),
    st.tuples(st.just("release"), st.tuples(ids)),
    st.tuples(st.just("sell"), st.tuples(ids)),
)

payment_commands = st.one_of(
    st.tuples(st.just("charge"), st.tuples(ids, st.integers(min_value=-1, max_value=50))),
    st.tuples(st.just("decline"), st.tuples(text)),
    st.tuples(st.just("refund"), st.tuples(ids, st.integers(min_value=-1, max_value=60), text)),
)


# A prefix of each happy path, then random commands, so that every state is reached
# often rather than only the first few.
ORDER_HAPPY_PATH = [
    ("create", ("c-1",)),
    ("add_item", ("a", "Thing", 2, 150)),
    ("add_item", ("b", "Other", 1, 99)),
    ("submit", ()),
    ("receive_payment", ("p-1", None)),
    ("ship", ("TN-1", "DHL")),
    ("deliver", ()),
]
INVENTORY_HAPPY_PATH = [
    ("register", ("Mug", 1250)),
    ("add_stock", (10,)),
    ("reserve", ("a", "o-1", 3)),
    ("reserve", ("b", "o-2", 4)),
    ("sell", ("a",)),
    ("release", ("b",)),
]
PAYMENT_HAPPY_PATH = [("charge", ("a", 50)), ("refund", ("a", 20, "x"))]


def sequences(happy_path: list, commands: st.SearchStrategy, max_size: int = 20):
    """A random-length prefix of ``happy_path`` followed by random ``commands``."""
    return st.builds(
        lambda k, tail: happy_path[:k] + tail,
        st.integers(min_value=0, max_value=len(happy_path)),
        st.lists(commands, max_size=max_size),
    )


def run(aggregate: Aggregate, commands: list[tuple[str, tuple[Any, ...]]], check=None) -> None:
    """Run each command; a refused one must leave state and pending events untouched."""
    for name, args in commands:
        if name == "receive_payment" and args[1] is None:
            args = (args[0], aggregate.total_cents)  # type: ignore[attr-defined]
        before = (aggregate.state_dict(), list(aggregate.pending))
        try:
            getattr(aggregate, name)(*args)
        except DomainError:
            assert (aggregate.state_dict(), aggregate.pending) == before
        else:
            assert aggregate.version == before[0]["version"] + 1
        if check is not None:
            check(aggregate)


def stored(aggregate: Aggregate) -> list:
    """The pending events as the event store would hand them back (through JSON)."""
    return [
        event_class(event.event_type).model_validate_json(event.model_dump_json())
        for event in aggregate.clear_pending()
    ]


def assert_rebuilds(aggregate: Aggregate, cut_fraction: float) -> None:
    """Full replay and snapshot-then-replay both reproduce the aggregate."""
    cls = type(aggregate)
    expected = aggregate.state_dict()
    events = stored(aggregate)
    assert len(events) == aggregate.version

    assert cls.load(aggregate.id, events).state_dict() == expected

    cut = int(cut_fraction * len(events))
    early = cls.load(aggregate.id, events[:cut])
    snapshot = json.loads(json.dumps(early.snapshot_state()))
    restored = cls.from_snapshot(aggregate.id, early.version, snapshot)
    for event in events[cut:]:
        restored.apply(event)
    assert restored.state_dict() == expected


def assert_conserved(inventory: Inventory) -> None:
    assert inventory.available + inventory.reserved + inventory.sold == inventory.stocked
    assert inventory.reserved == sum(r.quantity for r in inventory.reservations.values())
    assert min(inventory.available, inventory.reserved, inventory.sold) >= 0


cut_fractions = st.floats(min_value=0, max_value=1)


@PROPERTY_SETTINGS
@given(sequences(ORDER_HAPPY_PATH, order_commands), cut_fractions)
def test_an_order_rebuilt_from_its_events_or_a_snapshot_matches_the_original(commands, cut):
    order = Order("o-1")
    run(order, commands)
    assert_rebuilds(order, cut)


@PROPERTY_SETTINGS
@given(sequences(INVENTORY_HAPPY_PATH, inventory_commands), cut_fractions)
def test_inventory_conserves_stock_and_rebuilds_from_events_or_a_snapshot(commands, cut):
    inventory = Inventory("MUG")
    run(inventory, commands, check=assert_conserved)
    assert_rebuilds(inventory, cut)


@PROPERTY_SETTINGS
@given(sequences(PAYMENT_HAPPY_PATH, payment_commands, 12), cut_fractions)
def test_a_payment_never_refunds_more_than_it_charged_and_rebuilds(commands, cut):
    def refunds_bounded(payment: Payment) -> None:
        assert 0 <= payment.refunded_cents <= payment.charged_cents

    payment = Payment("o-1")
    run(payment, commands, check=refunds_bounded)
    assert_rebuilds(payment, cut)
