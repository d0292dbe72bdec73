"""Replay recorded histories against the current workflow code (CLI and tests).

Not imported by workflow code; no I/O except reading the given file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.worker import Replayer, WorkflowReplayResult

from workflows.registry import default_registry


def load_history(path: Path) -> WorkflowHistory:
    """A history exported as JSON (``temporal workflow show -o json`` or
    ``WorkflowHistory.to_json``); the workflow id is taken from the file name."""
    return WorkflowHistory.from_json(path.stem, path.read_text())


async def replay_history_file(
    path: Path,
    workflows: Sequence[type] | None = None,
    *,
    data_converter: DataConverter | None = None,
) -> WorkflowReplayResult:
    """Replay one history; raises the nondeterminism (or other) error on mismatch.

    ``workflows`` defaults to every registered saga type's class, so a history of
    any type replays (the CLI's ``sagaflow replay``); ``data_converter`` is the one
    the history was written with (Temporal's default when None)."""
    classes = list(workflows) if workflows is not None else default_registry().workflows
    replayer = Replayer(workflows=classes, data_converter=data_converter or DataConverter.default)
    return await replayer.replay_workflow(load_history(path))
