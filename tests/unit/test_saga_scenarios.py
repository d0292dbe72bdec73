"""The failure matrix is derived from a definition: steps, kinds and waits."""

from __future__ import annotations

from dataclasses import replace

from sagaflow.testing import Mode, matrix
from workflows.definition import COMPENSATABLE, Step
from workflows.order_saga import ORDER
from workflows.trip_saga import TRIP, book_flight, cancel_flight


def _cases(label: str, point: str, scenarios: list) -> set[str]:
    return {s.case for s in scenarios if s.id.startswith(f"{label}/{point}/")}


def test_every_step_gets_failures_and_every_compensation_its_parking_cases() -> None:
    scenarios = matrix(ORDER, "order")
    ids = [s.id for s in scenarios]
    assert len(ids) == len(set(ids)), "scenario ids are unique"
    assert "order/charge/commit_then_timeout" in ids
    for step in ("reserve", "charge", "create_order"):
        assert _cases("order", step, scenarios) >= {
            "reject", "commit_then_timeout", "fail_before_commit",
            "compensation_retried", "compensation_resolved", "cancel_while_parked",
            "worker_replaced",
        }  # fmt: skip
    # The pivot and the steps after it go forward: no compensation cases.
    for step in ("ship", "sell", "deliver"):
        assert not {c for c in _cases("order", step, scenarios) if c.startswith("compensation")}
    assert _cases("order", "await_shipment", scenarios) == {
        "cancel", "timer_expires", "worker_replaced",
    }  # fmt: skip
    assert "order/parked/worker_replaced" in ids


def test_expected_outcomes_follow_the_kinds() -> None:
    by_id = {s.id: s for s in matrix(ORDER, "order")}
    assert by_id["order/charge/reject"].expected == "compensated"
    assert by_id["order/charge/commit_then_timeout"].faults[0].attempts == 0  # until given up
    # After the pivot a failure is transient and the saga goes forward.
    sell = by_id["order/sell/commit_then_timeout"]
    assert sell.expected == "completed" and sell.faults[0].attempts == 2
    assert by_id["order/deliver/reject"].operator == "retry"
    # A cancel where the saga cannot be cancelled must be refused.
    assert by_id["order/await_delivery/cancel"].cancel_refused
    assert by_id["order/await_delivery/timer_expires"].expected == "shipped"
    # A compensation scenario fails the next step and the compensation.
    faults = by_id["order/charge/compensation_retried"].faults
    assert [(f.activity, f.mode) for f in faults] == [
        ("create_order", Mode.REJECT),
        ("refund_payment", Mode.REJECT),
    ]


def test_adding_a_step_adds_its_scenarios() -> None:
    before = {s.id for s in matrix(TRIP, "trip")}
    train = Step("book_train", COMPENSATABLE, book_flight, cancel_flight)
    longer = replace(TRIP, steps=(*TRIP.steps[:3], train, *TRIP.steps[3:]))
    after = {s.id for s in matrix(longer.validate(), "trip")}
    added = after - before
    assert before <= after
    assert added == {
        f"trip/book_train/{case}"
        for case in (
            "reject", "commit_then_timeout", "fail_before_commit", "compensation_retried",
            "compensation_resolved", "cancel_while_parked", "cancel", "worker_replaced",
        )
    }  # fmt: skip
