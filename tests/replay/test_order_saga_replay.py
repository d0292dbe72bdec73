"""Recorded histories of every saga path replay against the current workflow code.

The histories under ``histories/`` were recorded from real runs (dev server and
time-skipping server); re-record with ``SAGAFLOW_RECORD_HISTORIES=1`` (README.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.worker import Replayer

from workflows.models import ORDER_SAGA, Charged, OrderSagaInput, OrderSagaResult
from workflows.order_saga import OrderSagaWorkflow
from workflows.replay import load_history, replay_history_file

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
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


def test_a_history_is_kept_for_every_saga_path() -> None:
    assert {path.stem for path in HISTORIES} == EXPECTED_PATHS


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_recorded_history_replays_against_current_code(path: Path) -> None:
    await replay_history_file(path)


ENGINE_HISTORIES = sorted((Path(__file__).parent / "histories" / "engine-1").glob("*.json"))


@pytest.mark.parametrize("path", ENGINE_HISTORIES, ids=lambda p: p.stem)
async def test_history_recorded_with_the_engine_patch_replays_too(path: Path) -> None:
    # The other generation: runs started after "sagaflow-engine-1" (docs/sagas.md,
    # "Versioning a running saga"); the histories above are from before it.
    assert ENGINE_HISTORIES
    await replay_history_file(path)


async def test_workflow_with_two_steps_swapped_fails_replay() -> None:
    replayer = Replayer(workflows=[SwappedStepsOrderSaga])
    history = load_history(Path(__file__).parent / "histories" / "happy_path.json")
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
