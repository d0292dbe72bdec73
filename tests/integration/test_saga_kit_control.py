"""The kit can fail: broken sagas are caught, and bad kits are reported per scenario.

The control for ``test_saga_matrix.py``: a matrix that passes everything proves
nothing unless it fails on a saga that loses money or undoes steps out of order.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from temporalio.testing import WorkflowEnvironment

from sagaflow.testing import MatrixRunner, Observation
from sagaflow.testing.kits import ORDER_KIT, kit_for
from tests.kit.broken_sagas import FORWARD, MISSING, broken_registry
from workflows.registry import UnknownSagaType

pytestmark = pytest.mark.integration


async def _run(env: WorkflowEnvironment, saga_type: str, *points: str) -> dict[str, list[str]]:
    kit = replace(ORDER_KIT, saga_type=saga_type, registry=broken_registry(), name="broken")
    runner = MatrixRunner(kit, env)
    chosen = [s for s in runner.scenarios() if any(p in s.id for p in points)]
    assert chosen
    return {r.scenario.id: r.failures for r in await runner.run(chosen)}


async def test_compensations_in_forward_order_are_caught(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    failures = await _run(time_skipping_env, FORWARD.name, "create_order/reject", "happy_path")
    assert failures["broken/all/happy_path"] == []  # nothing to undo, nothing wrong
    caught = failures["broken/create_order/reject"]
    assert any("out of order" in f for f in caught), caught


async def test_a_missing_compensation_is_caught_by_the_money_invariant(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    failures = await _run(time_skipping_env, MISSING.name, "create_order/reject", "charge/reject")
    caught = failures["broken/create_order/reject"]
    assert any(f.startswith("charged_minus_refunded_is_live_total") for f in caught), caught
    assert any(f.startswith("compensated_once_in_reverse") for f in caught), caught
    # A failure before the charge has nothing of the charge to undo: not flagged.
    assert failures["broken/charge/reject"] == []


async def test_an_invariant_that_raises_is_reported_and_the_matrix_goes_on(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    def broken_invariant(obs: Observation) -> None:
        raise KeyError("no such field")

    kit = replace(ORDER_KIT, invariants=(*ORDER_KIT.invariants, broken_invariant))
    runner = MatrixRunner(kit, time_skipping_env)
    chosen = [
        s for s in runner.scenarios() if s.id in ("order/all/happy_path", "order/charge/reject")
    ]
    reports = await runner.run(chosen)
    assert [r.scenario.id for r in reports] == ["order/all/happy_path", "order/charge/reject"]
    for report in reports:
        assert report.failures == ["broken_invariant raised KeyError: 'no such field'"]
        assert report.held == report.invariants - 1


async def test_an_input_factory_returning_a_wrong_input_names_the_scenario(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    kit = replace(ORDER_KIT, make_input=lambda ctx: {"order_id": ctx.saga_id})
    runner = MatrixRunner(kit, time_skipping_env)
    chosen = [s for s in runner.scenarios() if s.id.startswith("order/reserve/")][:2]
    reports = await runner.run(chosen)
    assert len(reports) == 2
    for report, scenario in zip(reports, chosen, strict=True):
        assert report.observed == "error"
        assert report.failures == [
            f"{scenario.id}: the input factory returned dict, not OrderSagaInput"
        ]


def test_an_unknown_saga_type_names_the_known_ones() -> None:
    with pytest.raises(UnknownSagaType, match="unknown saga type 'shipping'; known types: order"):
        kit_for("shipping")
    assert kit_for("OrderSaga") is ORDER_KIT
