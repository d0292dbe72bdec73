"""Replay recorded histories against the current workflow code (CLI and tests).

Not imported by workflow code; no I/O except reading the given file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, WorkflowReplayResult

from workflows.registry import default_registry


def load_history(path: Path) -> WorkflowHistory:
    """A history exported as JSON (``temporal workflow show -o json`` or
    ``WorkflowHistory.to_json``); the workflow id is taken from the file name."""
    return WorkflowHistory.from_json(path.stem, path.read_text())


async def replay_history_file(
    path: Path, workflows: Sequence[type] | None = None
) -> WorkflowReplayResult:
    """Replay one history (default: against every registered saga type's workflow);
    raises the nondeterminism (or other) error on mismatch."""
    found = list(workflows) if workflows is not None else default_registry().workflows
    replayer = Replayer(workflows=found)
    return await replayer.replay_workflow(load_history(path))
