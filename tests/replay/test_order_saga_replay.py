"""Recorded histories of every order-saga path replay against the current code.

Five generations, all kept: ``histories/order/pre_engine/`` was recorded before the
saga engine (no patch marker), ``histories/order/pre_barrier/`` with it (marker
``sagaflow-engine-1``) but before the durable barrier, ``histories/order/barrier_1/``
with the first barrier (compensating paths carry ``sagaflow-durable-barrier-1``,
asked for lazily), ``histories/order/engine_2/`` with the engine's second
generation (``sagaflow-engine-2``, taken once at the start), ``histories/order/`` with
the third (only ``sagaflow-engine-3``; search attributes upserted once per workflow
task). All must replay: each addition is
gated by ``workflow.patched``, and a control shows the old ones fail without that
gate.
Re-record the current generation with ``SAGAFLOW_RECORD_HISTORIES=1`` (README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from workflows.models import ORDER_SAGA, Charged, OrderSagaInput, OrderSagaResult
from workflows.order_saga import OrderSagaWorkflow
from workflows.replay import load_history, replay_history_file
from workflows.saga import (
    DURABLE_BARRIER_PATCH,
    ENGINE_2_PATCH,
    ENGINE_3_PATCH,
    ENGINE_PATCH,
    Saga,
)

ROOT = Path(__file__).parent / "histories" / "order"
CURRENT = sorted(ROOT.glob("*.json"))
ENGINE_2 = sorted((ROOT / "engine_2").glob("*.json"))
PRE_ENGINE = sorted((ROOT / "pre_engine").glob("*.json"))
PRE_BARRIER = sorted((ROOT / "pre_barrier").glob("*.json"))
BARRIER_1 = sorted((ROOT / "barrier_1").glob("*.json"))
HISTORIES = CURRENT + ENGINE_2 + BARRIER_1 + PRE_BARRIER + PRE_ENGINE
#: the paths that compensate, or act on an update with a local step: the barrier's
COMPENSATING = {
    "payment_declined",
    "out_of_stock_second_line",
    "cancel_before_shipping",
    "compensation_parked_then_retried",
    "ship_deadline_expired",
}
EXPECTED_PATHS = {
    "happy_path",
    "payment_declined",
    "out_of_stock_second_line",
    "cancel_before_shipping",
    "cancel_after_shipping_refused",
    "compensation_parked_then_retried",
    "commit_then_fail",
    "ship_deadline_expired",
}


@workflow.defn(name=ORDER_SAGA)
class SwappedStepsOrderSaga(OrderSagaWorkflow):
    """The control: the same saga with two steps swapped (create before charge)."""

    @workflow.run
    async def run(self, input: OrderSagaInput) -> OrderSagaResult:
        """Unchanged run; only ``_run_steps`` differs."""
        return await super().run(input)

    async def _run_steps(self) -> None:
        await self._reserve_stock()
        self._charged = _placeholder_charge()
        await self._create_order()
        await self._charge_payment()


def _placeholder_charge() -> Charged:
    return Charged(payment_id="pay-swapped", amount_cents=0)


def test_a_history_is_kept_for_every_saga_path_of_every_generation() -> None:
    assert {path.stem for path in CURRENT} == EXPECTED_PATHS
    assert {path.stem for path in ENGINE_2} == EXPECTED_PATHS
    assert {path.stem for path in BARRIER_1} == EXPECTED_PATHS
    assert {path.stem for path in PRE_BARRIER} == EXPECTED_PATHS
    assert {path.stem for path in PRE_ENGINE} == EXPECTED_PATHS


def _has_marker(path: Path, patch: str = ENGINE_PATCH) -> bool:
    for event in load_history(path).events:
        if event.HasField("marker_recorded_event_attributes"):
            details = event.marker_recorded_event_attributes.details
            if any(patch.encode() in p.data for d in details.values() for p in d.payloads):
                return True
    return False


def test_only_the_engine_generations_carry_the_engine_patch_marker() -> None:
    assert all(_has_marker(p) for p in ENGINE_2 + BARRIER_1 + PRE_BARRIER)
    assert not any(_has_marker(p) for p in PRE_ENGINE)


def test_the_first_barrier_marker_is_on_its_generations_compensating_paths_only() -> None:
    marked = {p.stem for p in BARRIER_1 if _has_marker(p, DURABLE_BARRIER_PATCH)}
    assert marked >= COMPENSATING
    older = CURRENT + ENGINE_2 + PRE_BARRIER + PRE_ENGINE
    assert not any(_has_marker(p, DURABLE_BARRIER_PATCH) for p in older)


def test_the_second_generation_histories_carry_its_marker_and_only_they() -> None:
    assert all(_has_marker(p, ENGINE_2_PATCH) for p in ENGINE_2)
    others = CURRENT + BARRIER_1 + PRE_BARRIER + PRE_ENGINE
    assert not any(_has_marker(p, ENGINE_2_PATCH) for p in others)


def test_a_current_history_carries_the_third_generation_marker_alone() -> None:
    """One patch per new run: each costs a marker and a TemporalChangeVersion upsert."""
    assert all(_has_marker(p, ENGINE_3_PATCH) for p in CURRENT)
    assert not any(_has_marker(p, ENGINE_PATCH) for p in CURRENT)
    older = ENGINE_2 + BARRIER_1 + PRE_BARRIER + PRE_ENGINE
    assert not any(_has_marker(p, ENGINE_3_PATCH) for p in older)


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_recorded_history_replays_against_current_code(path: Path) -> None:
    await replay_history_file(path)


async def test_pre_engine_histories_fail_replay_without_the_patch_gate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control for versioning: the engine's additions taken unconditionally
    (as if ``workflow.patched`` were not there) break the runs recorded before."""
    original = Saga.start

    async def ungated_start(self: Saga) -> None:
        await original(self)
        self.engine_features = True

    monkeypatch.setattr(Saga, "start", ungated_start)
    # Unsandboxed, so the patched method is the one that runs.
    replayer = Replayer(workflows=[OrderSagaWorkflow], workflow_runner=UnsandboxedWorkflowRunner())
    failed = set()
    for path in PRE_ENGINE:
        result = await replayer.replay_workflow(load_history(path), raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failed.add(path.stem)
    # The runs that shipped reach the engine's status records; paths that never
    # reach an engine-only command (a decline, say) replay either way.
    assert {"happy_path", "cancel_after_shipping_refused"} <= failed, failed


async def test_workflow_with_two_steps_swapped_fails_replay() -> None:
    replayer = Replayer(workflows=[SwappedStepsOrderSaga])
    history = load_history(ROOT / "happy_path.json")
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
