"""Histories that temporalio cannot replay today, kept to notice when it can.

``known_defects/`` is outside ``histories/`` on purpose: the replay gate requires
everything there to replay.

``cancel_update_after_eviction.json`` comes from the reliability suite's Temporal
restart (stop 21). The cancel update reached the saga on the workflow task that
also carried the charge's completion, and the worker had to rebuild the run from
its history (the restart had evicted it). That task recorded the step's search
attribute upsert and journal marker *before* the update's acceptance (events
21-23); a replay delivers the update first and fails with "Update machine does not
handle this event: HistoryEvent(id: 21, UpsertWorkflowSearchAttributes)". The run
itself completed and the store agrees with it; what breaks is every later replay
(status queries, and a run that is still open would be stuck on its next task).
The ordering is the SDK core's, not the saga's. When an SDK upgrade fixes it, this
test fails (strict xfail): move the file to ``histories/order/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.worker import Replayer

from workflows.order_saga import OrderSagaWorkflow
from workflows.replay import load_history

DEFECTS = Path(__file__).parent / "known_defects"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="temporalio 1.35: update after an eviction replays out of order",
)
async def test_a_cancel_update_delivered_while_a_run_was_rebuilt_replays() -> None:
    history = load_history(DEFECTS / "cancel_update_after_eviction.json")
    result = await Replayer(workflows=[OrderSagaWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, str(result.replay_failure)[:300]
