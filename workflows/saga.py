"""A reusable saga for Temporal workflows: steps with typed compensations.

Usage inside a workflow::

    saga = Saga("order-1", "OrderSaga", journal=record)
    await saga.start()
    reserved = await saga.run_step(
        "reserve:A", InventoryActivities.reserve_stock, ReserveStock(...),
        options=step_options,
        compensation=InventoryActivities.release_stock,
        compensation_arg=ReleaseStock(...),
    )
    ...
    await saga.compensate("PaymentDeclined: card declined")

Rules it enforces:

* a step's compensation is a reference to an activity method (never a string) and
  is registered *just before* the step runs: an action whose outcome is unknown
  (it timed out after committing) is still undone; compensations are idempotent
  and a no-op when their action never happened;
* on failure the registered compensations run in reverse order; consecutive ones
  declared ``parallel=True`` run together;
* a compensation that still fails after its retry policy is *parked*: recorded in
  the journal and the log, then the saga waits for ``decide(step, "retry"|"resolve")``
  (wired to workflow updates) -- it is never dropped.

No I/O here: everything runs in the workflow sandbox and must be deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from workflows.models import CompensationEntry, RetryKnobs, SagaRecord

ArgT = TypeVar("ArgT")
ResT = TypeVar("ResT")

ActivityMethod = Callable[[Any, ArgT], Awaitable[ResT]]
"""An activity defined as a method (``InventoryActivities.reserve_stock``)."""

Journal = Callable[[list[SagaRecord]], Awaitable[None]]
"""Appends saga events in one go (the workflow wires it to an activity)."""

Decision = Literal["retry", "resolve"]

# Compensation log states the query shows (see CompensationEntry).
PENDING, RUNNING, DONE, PARKED, RETRYING, RESOLVED = (
    "pending",
    "running",
    "done",
    "parked",
    "retrying",
    "resolved",
)


def retry_policy(knobs: RetryKnobs) -> RetryPolicy:
    """The Temporal retry policy for ``knobs``.

    Business failures are raised by activities as non-retryable ApplicationErrors,
    so they are never retried whatever the policy says.
    """
    return RetryPolicy(
        initial_interval=timedelta(seconds=knobs.initial_interval_s),
        backoff_coefficient=knobs.backoff,
        maximum_interval=timedelta(seconds=knobs.max_interval_s),
        maximum_attempts=knobs.max_attempts,
    )


@dataclass(frozen=True)
class StepOptions:
    """How one activity is executed: timeout, retries, local or regular activity.

    ``local=True`` runs it as a local activity (in the worker that runs the workflow
    task, result recorded as a marker): right for short, idempotent event-store
    writes; wrong for slow external calls that need heartbeats or their own queue.
    """

    retry: RetryKnobs = field(default_factory=RetryKnobs)
    start_to_close_s: float = 10.0
    local: bool = False


async def execute(fn: ActivityMethod[ArgT, ResT], arg: ArgT, options: StepOptions) -> ResT:
    """Run an activity method as a local or a regular activity."""
    timeout = timedelta(seconds=options.start_to_close_s)
    policy = retry_policy(options.retry)
    if options.local:
        return await workflow.execute_local_activity_method(
            fn, arg, start_to_close_timeout=timeout, retry_policy=policy
        )
    return await workflow.execute_activity_method(
        fn, arg, start_to_close_timeout=timeout, retry_policy=policy
    )


def describe_failure(err: BaseException) -> str:
    """``Type: message`` of the root business cause, for logs, events and queries."""
    cause: BaseException | None = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.type or 'Error'}: {cause.message}"
    if isinstance(cause, FailureError):
        return f"{type(cause).__name__}: {cause.message}"
    return f"{type(cause).__name__}: {cause}"


def failure_type(err: BaseException) -> str:
    """The ApplicationError type of the root cause ("" for timeouts and the like)."""
    cause: BaseException | None = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    return (cause.type or "") if isinstance(cause, ApplicationError) else ""


@dataclass
class _Compensation:
    step: str
    fn: ActivityMethod[Any, Any]
    arg: Any
    options: StepOptions
    parallel: bool
    entry: CompensationEntry


class Saga:
    """The steps done so far and what undoes them; one per workflow run."""

    def __init__(
        self,
        saga_id: str,
        saga_type: str,
        *,
        journal: Journal,
        order_id: str | None = None,
    ) -> None:
        self.saga_id = saga_id
        self.saga_type = saga_type
        self.order_id = order_id
        self.current_step = ""
        self.completed_steps: list[str] = []
        self.compensation_log: list[CompensationEntry] = []
        self.compensating = False
        self._journal = journal
        self._seq = 0
        self._stack: list[_Compensation] = []
        self._decisions: dict[str, tuple[Decision, str]] = {}
        self._buffer: list[SagaRecord] = []

    # --- forward ----------------------------------------------------------------

    async def start(self) -> None:
        """Record SagaStarted, alone, as journal record 1.

        Why alone and first: the API appends the same SagaStarted with the same event
        id (workflow id, "journal", 1) to hand out a consistency token at once; one
        of the two appends is then a no-op, never a partial-duplicate conflict.
        """
        await self._record("SagaStarted")

    async def run_step(
        self,
        name: str,
        action: ActivityMethod[ArgT, ResT],
        arg: ArgT,
        *,
        options: StepOptions,
        compensation: ActivityMethod[Any, Any] | None = None,
        compensation_arg: Any = None,
        compensation_options: StepOptions | None = None,
        parallel: bool = False,
    ) -> ResT:
        """Register the step's compensation, then run its action; record completion.

        Raises the action's failure unchanged (a FailureError: ActivityError for a
        regular activity; the ApplicationError or TimeoutError itself for a local
        one): the caller decides to compensate.
        """
        if compensation is not None:
            # Why before the action: if the action commits and then times out, its
            # outcome is unknown; the (idempotent) compensation must still run.
            entry = CompensationEntry(step=name, activity=_activity_name(compensation))
            self._stack.append(
                _Compensation(
                    name,
                    compensation,
                    compensation_arg,
                    compensation_options or options,
                    parallel,
                    entry,
                )
            )
            self.compensation_log.append(entry)
        self.current_step = name
        result = await execute(action, arg, options)
        self.completed_steps.append(name)
        # Why buffered: step completions are also visible as the steps' own events;
        # writing them with the next saga-level record saves an append per step.
        await self._record("SagaStepCompleted", step=name, buffer=True)
        return result

    async def complete(self) -> None:
        """Record SagaCompleted: every step succeeded; compensations stay registered.

        Why they stay: the order saga may still be cancelled (or time out) after the
        saga proper completed, and then the same compensations undo it.
        """
        self.current_step = ""
        await self._record("SagaCompleted")

    # --- backward ---------------------------------------------------------------

    async def compensate(self, reason: str) -> list[str]:
        """Undo every registered step in reverse order; record SagaCompensated.

        Returns the compensated step names in the order they were undone. Parked
        compensations block here until an operator decides; none is skipped.
        """
        self.compensating = True
        undone: list[str] = []
        pending = list(reversed(self._stack))
        self._stack.clear()
        while pending:
            group = [pending.pop(0)]
            while group[0].parallel and pending and pending[0].parallel:
                group.append(pending.pop(0))
            self.current_step = "compensate:" + ",".join(c.step for c in group)
            # Why gather is safe here: the SDK's event loop is deterministic and
            # gather schedules the activities in list order (asyncio.wait is not).
            await asyncio.gather(*(self._run_compensation(c) for c in group))
            undone.extend(c.step for c in group)
        self.current_step = ""
        self.compensating = False
        await self._record("SagaCompensated", reason=reason, steps=undone)
        return undone

    async def _run_compensation(self, comp: _Compensation) -> None:
        entry = comp.entry
        was_parked = False
        while True:
            entry.status = RUNNING
            entry.attempts += 1
            try:
                await execute(comp.fn, comp.arg, comp.options)
            except FailureError as err:
                # Retries are exhausted (or the failure was non-retryable): park it.
                entry.error = describe_failure(err)
                entry.status = PARKED
                was_parked = True
                await self._record("CompensationParked", step=comp.step, reason=entry.error)
                await workflow.wait_condition(lambda: comp.step in self._decisions)
                decision, note = self._decisions.pop(comp.step)
                entry.note = note
                if decision == "resolve":
                    entry.status = RESOLVED
                    await self._record(
                        "CompensationResolved",
                        step=comp.step,
                        reason=f"resolved manually: {note}" if note else "resolved manually",
                    )
                    return
                await self._record("CompensationRetried", step=comp.step)
                continue
            entry.status = DONE
            entry.error = ""
            if was_parked:
                await self._record("CompensationResolved", step=comp.step, reason="retried")
            return

    # --- operator decisions (wired to workflow updates) -------------------------

    @property
    def parked_steps(self) -> list[str]:
        """Steps whose compensation waits for an operator."""
        return [c.step for c in self.compensation_log if c.status == PARKED]

    def check_parked(self, step: str) -> None:
        """Raise ApplicationError unless ``step``'s compensation is parked (validators)."""
        if step not in self.parked_steps:
            parked = ", ".join(self.parked_steps) or "none"
            raise ApplicationError(
                f"saga {self.saga_id}: compensation of step {step!r} is not parked "
                f"(parked: {parked})",
                type="NotParked",
                non_retryable=True,
            )

    def decide(self, step: str, decision: Decision, note: str = "") -> CompensationEntry:
        """Hand a parked compensation the operator's decision; returns its log entry."""
        self.check_parked(step)
        entry = next(c for c in self.compensation_log if c.step == step and c.status == PARKED)
        entry.status = RETRYING if decision == "retry" else RUNNING
        self._decisions[step] = (decision, note)
        return entry

    # --- journal ----------------------------------------------------------------

    async def _record(
        self,
        kind: str,
        *,
        step: str = "",
        reason: str = "",
        steps: list[str] | None = None,
        buffer: bool = False,
    ) -> None:
        self._seq += 1
        self._buffer.append(
            SagaRecord(
                saga_id=self.saga_id,
                saga_type=self.saga_type,
                kind=kind,
                seq=self._seq,
                step=step,
                reason=reason,
                steps=list(steps or []),
                order_id=self.order_id,
            )
        )
        if not buffer:
            records, self._buffer = self._buffer, []
            await self._journal(records)


def _activity_name(fn: Callable[..., Any]) -> str:
    defn = getattr(fn, "__temporal_activity_definition", None)
    return str(getattr(defn, "name", None) or getattr(fn, "__name__", "activity"))
