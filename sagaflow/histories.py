"""The replay gate: export histories of real runs, replay them against the current code.

``export_histories`` writes one JSON file per workflow (the format of
``temporal workflow show --output json``: ``{"events": [...]}``), named by workflow
id; ``replay_path`` replays a file or every ``*.json`` under a folder against the
registered saga types and says, per file, whether it replays, and if not the
workflow id and the first event the current code does not reproduce.

Why a folder of files: a team copies histories of production runs into the repo
(``tests/replay/histories/<type>/``), and CI replays them on every change, so a
change that would break running sagas fails before it is deployed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter, DefaultFailureConverter
from temporalio.worker import Replayer

from workflows.registry import SagaRegistry, default_registry


class HistoryFileError(ValueError):
    """A file that is not a Temporal history, or one of an unregistered type."""


@dataclass(frozen=True)
class ReplayOutcome:
    """How one history replayed."""

    path: Path
    workflow_id: str
    workflow_type: str
    error: str = ""
    """Empty when it replayed; else the first mismatch (or the failure), one line."""
    readable: bool = True
    """False when the file is not a history of a registered type (``error`` says why)."""

    @property
    def ok(self) -> bool:
        """Whether the current code reproduces the history."""
        return not self.error


def _safe_name(workflow_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", workflow_id) or "workflow"


async def export_histories(
    client: Client, query: str, directory: Path, *, limit: int = 1000
) -> list[Path]:
    """Write the history of every workflow matching ``query`` (a visibility query,
    e.g. ``WorkflowType='OrderSaga' AND ExecutionStatus='Completed'``) to
    ``directory/<workflow id>.json`` (the folder must exist); returns the files."""
    written: list[Path] = []
    async for execution in client.list_workflows(query, limit=limit):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        target = directory / f"{_safe_name(execution.id)}.json"
        await asyncio.to_thread(target.write_text, history.to_json())
        written.append(target)
    return written


def history_files(path: Path) -> list[Path]:
    """``path`` itself, or every ``*.json`` below it, sorted."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*.json") if p.is_file())
    if path.exists():
        return [path]
    raise HistoryFileError(f"{path}: no such file or folder")


def read_history(path: Path, registry: SagaRegistry) -> tuple[WorkflowHistory, str]:
    """Load one history file and its workflow type; HistoryFileError says why not."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise HistoryFileError(f"{path}: cannot read it ({err})") from None
    except json.JSONDecodeError as err:
        raise HistoryFileError(f"{path}: not JSON ({err.msg}, line {err.lineno})") from None
    events = raw.get("events") if isinstance(raw, dict) else None
    first = events[0] if isinstance(events, list) and events else None
    started = (
        first.get("workflowExecutionStartedEventAttributes") if isinstance(first, dict) else None
    )
    if not isinstance(started, dict):
        raise HistoryFileError(
            f'{path}: not a Temporal history (expected {{"events": [...]}} starting '
            "with WorkflowExecutionStarted, as `temporal workflow show --output json` writes)"
        )
    workflow_type = str((started.get("workflowType") or {}).get("name", ""))
    if registry.by_workflow(workflow_type) is None:
        known = ", ".join(registry.names)
        raise HistoryFileError(
            f"{path}: workflow type {workflow_type!r} is not a registered saga type "
            f"(registered: {known})"
        )
    try:
        history = WorkflowHistory.from_json(path.stem, raw)
    except Exception as err:
        raise HistoryFileError(f"{path}: not a Temporal history ({err})") from None
    return history, workflow_type


_EVENT = re.compile(r"HistoryEvent\(id: (\d+), (\w+)\)|event (?:id )?(\d+)", re.IGNORECASE)


def first_mismatch(error: BaseException | str) -> str:
    """One line from a replay failure: the SDK's message, with the event it names."""
    text = str(error)
    found = re.search(r'message: "([^"]+)"', text)
    line = found.group(1) if found else (text.strip().splitlines() or [""])[0]
    event = _EVENT.search(text)
    if event and "event" not in line.lower():
        number = event.group(1) or event.group(3)
        kind = f" ({event.group(2)})" if event.group(2) else ""
        line = f"event {number}{kind}: {line}"
    return line


def _encrypted(history: WorkflowHistory) -> bool:
    """Whether the workflow's input is encrypted by sagaflow's payload codec."""
    started = history.events[0].workflow_execution_started_event_attributes
    return any(p.metadata.get("encoding") == b"binary/encrypted" for p in started.input.payloads)


async def replay_path(
    path: Path,
    registry: SagaRegistry | None = None,
    workflows: Sequence[type] | None = None,
    *,
    data_converter: DataConverter | None = None,
) -> list[ReplayOutcome]:
    """Replay ``path`` (a file or a folder); one outcome per file.

    A file that is not a history (or of an unregistered type) gets an outcome with
    ``readable=False`` and the reason; the other files still replay.
    ``data_converter``: the one the histories were written with (the payload codec's,
    for encrypted histories); Temporal's default when None."""
    registry = registry or default_registry()
    converter = data_converter or DataConverter.default
    # Why the plain failure converter: with encrypted payloads, failures are encrypted
    # too, and a replay failure (e.g. a payload of a key no longer in the keyring)
    # would read "Encoded failure"; nothing here goes back to the server.
    converter = dataclasses.replace(converter, failure_converter_class=DefaultFailureConverter)
    replayer = Replayer(
        workflows=list(workflows) if workflows is not None else registry.workflows,
        data_converter=converter,
    )
    outcomes = []
    for file in history_files(path):
        try:
            history, workflow_type = read_history(file, registry)
        except HistoryFileError as err:
            outcomes.append(ReplayOutcome(file, "", "", str(err), readable=False))
            continue
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        error = first_mismatch(result.replay_failure) if result.replay_failure else ""
        if error and converter.payload_codec is None and _encrypted(history):
            error = (
                "its payloads are encrypted (binary/encrypted): set SAGAFLOW_CODEC_KEYS to "
                f"the keys that wrote them ({error})"
            )
        outcomes.append(ReplayOutcome(file, history.workflow_id, workflow_type, error))
    return outcomes
