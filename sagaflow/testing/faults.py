"""Fault injection for the test kit: an activity interceptor over the real activities.

The worker of a scenario runs the saga type's real activity implementations; the
interceptor looks up the scenario's :class:`FaultBoard` by workflow id and, for the
activity types it names, refuses, fails before or after the real call, or holds the
call at a gate until the kit has acted. Calls of other workflows (a set-up saga)
pass untouched. Each board also records what ran, for the invariants.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from sagaflow.testing.scenarios import Fault, Mode

KIT_REJECTION = "KitRejection"
"""ApplicationError type of an injected business refusal."""

KIT_TIMEOUT = "KitTimeout"
"""ApplicationError type of an injected lost answer (retryable)."""


@dataclass
class _Armed:
    fault: Fault
    calls: int = 0
    lifted: bool = False


@dataclass
class FaultBoard:
    """The faults of one scenario's saga, and a record of its activity calls."""

    workflow_id: str
    faults: tuple[Fault, ...] = ()
    succeeded: Counter[str] = field(default_factory=Counter)
    refused_args: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    """The arguments of every call the kit made fail, by activity type (what an
    operator repairs by hand before resolving)."""
    gate_reached: asyncio.Event = field(default_factory=asyncio.Event)
    gate_open: asyncio.Event = field(default_factory=asyncio.Event)
    _armed: dict[str, _Armed] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for fault in self.faults:
            self._armed[fault.activity] = _Armed(fault)

    def lift(self, activity_type: str | None = None) -> None:
        """Stop failing ``activity_type`` (every fault when None)."""
        for name, armed in self._armed.items():
            if activity_type is None or name == activity_type:
                armed.lifted = True

    def open_gate(self) -> None:
        """Let the held call go on."""
        self.gate_open.set()

    def fault_of(self, activity_type: str) -> _Armed | None:
        """The armed fault of an activity type, while it still applies."""
        armed = self._armed.get(activity_type)
        if armed is None or armed.lifted:
            return None
        if armed.fault.attempts and armed.calls >= armed.fault.attempts:
            return None
        return armed


class KitInterceptor(Interceptor):
    """Routes each activity call to its scenario's board (by workflow id)."""

    def __init__(self) -> None:
        self.boards: dict[str, FaultBoard] = {}

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        """Wrap the worker's activity calls."""
        return _Inbound(next, self.boards)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, boards: dict[str, FaultBoard]) -> None:
        super().__init__(next)
        self._boards = boards

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        board = self._boards.get(info.workflow_id or "")
        if board is None:
            return await super().execute_activity(input)
        name = info.activity_type
        armed = board.fault_of(name)
        if armed is not None:
            armed.calls += 1
            mode = armed.fault.mode
            if mode is not Mode.GATE:
                calls = board.refused_args.setdefault(name, [])
                if tuple(input.args) not in calls:
                    calls.append(tuple(input.args))
            if mode is Mode.GATE:
                # Hold only the first call; the kit cancels or replaces the worker
                # meanwhile. Why lift at once: a retry on the new worker must run.
                armed.lifted = True
                board.gate_reached.set()
                await board.gate_open.wait()
            elif mode is Mode.REJECT:
                raise ApplicationError(
                    f"{name} refused (injected by the test kit)",
                    type=KIT_REJECTION,
                    non_retryable=True,
                )
            elif mode is Mode.FAIL_BEFORE_COMMIT:
                raise ApplicationError(
                    f"{name} failed before committing (injected)", type=KIT_TIMEOUT
                )
            elif mode is Mode.COMMIT_THEN_FAIL:
                await super().execute_activity(input)
                raise ApplicationError(
                    f"{name} committed, then its answer was lost (injected)", type=KIT_TIMEOUT
                )
        result = await super().execute_activity(input)
        board.succeeded[name] += 1
        return result
