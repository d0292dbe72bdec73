"""Recorded histories of every returns-saga path replay against the current code.

Recorded from real runs (dev server and time-skipping server) by
``tests/integration/test_returns_saga*.py`` with ``SAGAFLOW_RECORD_HISTORIES=1``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.worker import Replayer

from workflows.replay import load_history, replay_history_file
from workflows.returns_models import RETURN_SAGA, ReturnSagaInput, ReturnSagaResult
from workflows.returns_saga import ReturnSagaWorkflow

HISTORIES_DIR = Path(__file__).parent / "histories" / "returns"
CURRENT = sorted(HISTORIES_DIR.glob("*.json"))
#: recorded with the engine's second generation (before ``sagaflow-engine-3``)
ENGINE_2 = sorted((HISTORIES_DIR / "engine_2").glob("*.json"))
HISTORIES = CURRENT + ENGINE_2
EXPECTED_PATHS = {
    "happy_path",
    "refund_failed_compensated",
    "notify_retried_forward",
    "receive_deadline_expired",
}


@workflow.defn(name=RETURN_SAGA)
class RefundFirstReturnSaga(ReturnSagaWorkflow):
    """The control: the same saga refunding before it restocks."""

    @workflow.run
    async def run(self, input: ReturnSagaInput) -> ReturnSagaResult:
        """Unchanged run; only ``_restock`` differs."""
        return await super().run(input)

    async def _restock(self) -> None:
        await self._refund_return()


def test_a_history_is_kept_for_every_returns_path() -> None:
    assert {path.stem for path in CURRENT} == EXPECTED_PATHS
    assert {path.stem for path in ENGINE_2} == EXPECTED_PATHS


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: f"{p.parent.name}/{p.stem}")
async def test_recorded_returns_history_replays_against_current_code(path: Path) -> None:
    await replay_history_file(path, workflows=(ReturnSagaWorkflow,))


async def test_returns_saga_with_refund_before_restock_fails_replay() -> None:
    replayer = Replayer(workflows=[RefundFirstReturnSaga])
    history = load_history(HISTORIES_DIR / "happy_path.json")
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
