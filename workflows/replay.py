"""Replay recorded histories against the current workflow code (CLI and tests).

Not imported by workflow code; no I/O except reading the given file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, WorkflowReplayResult

from workflows.order_saga import OrderSagaWorkflow


def load_history(path: Path) -> WorkflowHistory:
    """A history exported as JSON (``temporal workflow show -o json`` or
    ``WorkflowHistory.to_json``); the workflow id is taken from the file name."""
    return WorkflowHistory.from_json(path.stem, path.read_text())


async def replay_history_file(
    path: Path, workflows: Sequence[type] = (OrderSagaWorkflow,)
) -> WorkflowReplayResult:
    """Replay one history; raises the nondeterminism (or other) error on mismatch."""
    replayer = Replayer(workflows=list(workflows))
    return await replayer.replay_workflow(load_history(path))
