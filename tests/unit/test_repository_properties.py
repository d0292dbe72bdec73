"""Property: through the store, snapshot + tail loads the same aggregate as full replay."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import Aggregate, DomainError, Inventory, Order, Payment
from eventstore import InMemoryEventStore, Repository
from tests.unit.test_domain_properties import (
    INVENTORY_HAPPY_PATH,
    ORDER_HAPPY_PATH,
    PAYMENT_HAPPY_PATH,
    inventory_commands,
    order_commands,
    payment_commands,
    sequences,
)

snapshot_intervals = st.integers(min_value=1, max_value=7)


async def _save_each_command(
    repo: Repository[Any], aggregate: Aggregate, commands: list[tuple[str, tuple[Any, ...]]]
) -> None:
    for name, args in commands:
        if name == "receive_payment" and args[1] is None:
            args = (args[0], aggregate.total_cents)  # type: ignore[attr-defined]
        try:
            getattr(aggregate, name)(*args)
        except DomainError:
            continue
        await repo.save(aggregate)


def _check(cls: type[Aggregate], commands: list, every: int) -> None:
    async def scenario() -> None:
        store = InMemoryEventStore()
        repo: Repository[Any] = Repository(store, cls, snapshot_every=every)
        original = cls("x-1")
        await _save_each_command(repo, original, commands)
        with_snapshot = await repo.load("x-1")
        full = await repo.load("x-1", use_snapshot=False)
        assert with_snapshot.state_dict() == full.state_dict() == original.state_dict()
        snap = await store.load_snapshot(original.stream_id)
        if original.version >= every:
            assert snap is not None and snap.version <= original.version
        else:
            assert snap is None

    asyncio.run(scenario())


PROPERTY = settings(max_examples=60, deadline=None)


@PROPERTY
@given(sequences(ORDER_HAPPY_PATH, order_commands), snapshot_intervals)
def test_an_order_loads_the_same_from_a_snapshot_and_from_its_events(commands, every):
    _check(Order, commands, every)


@PROPERTY
@given(sequences(INVENTORY_HAPPY_PATH, inventory_commands), snapshot_intervals)
def test_inventory_loads_the_same_from_a_snapshot_and_from_its_events(commands, every):
    _check(Inventory, commands, every)


@PROPERTY
@given(sequences(PAYMENT_HAPPY_PATH, payment_commands, 12), snapshot_intervals)
def test_a_payment_loads_the_same_from_a_snapshot_and_from_its_events(commands, every):
    _check(Payment, commands, every)
