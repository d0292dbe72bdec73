"""The engine's workflow base: journal, status and plan queries, outcome, cancel and
operator updates for every saga type.

A saga type with its own flow subclasses :class:`SagaWorkflow`, sets
``definition``, calls :meth:`SagaWorkflow.init_saga` from its ``@workflow.init`` and
drives ``self.saga`` from its ``@workflow.run``. A linear saga needs no class at all:
:func:`linear_saga` builds one from the definition. Either way the handlers below
come with it; requests in the wrong state are refused by validators, which write
nothing to history.

Hooks a flow may override (plain methods, never the decorated handlers):
``cancellable`` (may a cancel be accepted now), ``outcome_reached`` (has the saga
proper an outcome), ``noun`` (how refusals name the saga), ``status_extras``.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from typing import Any, ClassVar

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError, FailureError

from workflows.definition import SagaDefinition, StepContext, StepOptions
from workflows.models import (
    CANCEL,
    OUTCOME,
    PLAN_QUERY,
    RESOLVE_COMPENSATION,
    RETRY_COMPENSATION,
    SKIP_COMPENSATION,
    STATUS_QUERY,
    CancelRequest,
    CompensationDecision,
    EngineOptions,
    RetryKnobs,
    SagaPlan,
    SagaRecord,
    SagaResult,
    SagaStatus,
)
from workflows.saga import (
    DONE,
    PARKED,
    RESOLVED,
    SKIPPED,
    STATUS_COMPENSATED,
    STATUS_COMPENSATING,
    STATUS_COMPLETED,
    STATUS_PARKED,
    STATUS_RUNNING,
    Saga,
    SagaAborted,
    describe_failure,
    execute,
)
from workflows.visibility import input_keys

ENGINE_MEMO = "sagaflow"
"""Memo field holding the :class:`EngineOptions` a saga was started with."""


@activity.defn(name="record_saga_events")
async def record_saga_events(records: list[SagaRecord]) -> None:
    """Contract of the journal activity: append saga events in one atomic append.

    Implemented in ``activities/saga_journal.py`` (registered by the worker); the
    workflow only needs this typed reference.
    """
    raise NotImplementedError("the worker registers the implementation")


# Why unlimited attempts: a saga event must never be lost; an event-store outage is
# waited out rather than turned into a saga failure. Local: one short append.
JOURNAL_OPTIONS = StepOptions(retry=RetryKnobs(max_attempts=0), local=True)


def engine_options() -> EngineOptions:
    """The engine options from the memo (defaults for sagas started without them)."""
    raw = workflow.memo_value(ENGINE_MEMO, default=None, type_hint=dict)
    if not raw:
        return EngineOptions()
    known = {k: v for k, v in raw.items() if k in EngineOptions.__dataclass_fields__}
    return EngineOptions(**known)


class SagaWorkflow:
    """Base of every saga workflow; see the module docstring."""

    definition: ClassVar[SagaDefinition]
    saga: Saga

    def init_saga(
        self,
        saga_id: str,
        saga_input: Any,
        *,
        order_id: str | None = None,
        journal_options: StepOptions | None = None,
    ) -> Saga:
        """Build ``self.saga`` (call from ``@workflow.init``: handlers may run first)."""
        self._journal_options = journal_options or JOURNAL_OPTIONS
        self.saga = Saga(
            self.definition,
            saga_id,
            journal=self._journal,
            order_id=order_id,
            keys=input_keys(self.definition, saga_input),
            options=engine_options(),
        )
        return self.saga

    async def _journal(self, records: list[SagaRecord]) -> None:
        await execute(record_saga_events, records, self._journal_options)

    # --- hooks ----------------------------------------------------------------------

    def cancellable(self) -> bool:
        """Whether a cancel may be accepted now (default: while running forward)."""
        return self.saga.status == STATUS_RUNNING and not self.saga.pivot_committed

    def outcome_reached(self) -> bool:
        """Whether the saga proper has an outcome (the ``outcome`` update returns)."""
        return self.saga.current_status not in (STATUS_RUNNING, STATUS_COMPENSATING)

    def noun(self) -> str:
        """How refusals name this saga ("Order 42", "saga 42")."""
        return f"saga {self.saga.saga_id}"

    def status_extras(self) -> dict[str, Any]:
        """Extra fields of the status query (SagaStatus fields by name)."""
        return {}

    def refuse(self, command: str) -> None:
        """Raise the refusal of ``command`` in the current state (validators)."""
        status = self.saga.current_status
        if self.saga.cancel_reason is not None and not self.saga.compensating:
            status = "being cancelled"
        raise ApplicationError(
            f"{self.noun()} is {status}: cannot {command}", type="WrongState", non_retryable=True
        )

    # --- updates and queries ------------------------------------------------------

    @workflow.update(name=OUTCOME)
    async def outcome(self) -> str:
        """Wait until the saga proper has an outcome; returns the status.

        No validator: asking is always allowed. Lets a caller start a saga and learn
        the result in one round trip (update-with-start) instead of polling.
        """
        await workflow.wait_condition(self.outcome_reached)
        return self.saga.current_status

    @workflow.update(name=CANCEL)
    async def cancel(self, request: CancelRequest) -> str:
        """Cancel: everything done so far is compensated; returns the status after."""
        saga = self.saga
        saga.request_cancel(request.reason)
        await workflow.wait_condition(
            lambda: (
                saga.current_status in (STATUS_COMPENSATED, STATUS_PARKED)
                or (saga.pivot_committed and not saga.compensating)
            )
        )
        if saga.pivot_committed and not saga.compensating:
            pivot = saga.definition.pivot
            # Accepted while the pivot was in flight, and the pivot committed: there
            # is no way back any more; say so instead of waiting forever.
            raise ApplicationError(
                f"{self.noun()}: too late to cancel, step {pivot.name if pivot else '?'} committed",
                type="TooLate",
                non_retryable=True,
            )
        return saga.current_status

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if not request.reason.strip():
            raise ValueError("reason must not be empty")
        if not self.cancellable() or self.saga.cancel_reason is not None:
            self.refuse("cancel")

    @workflow.update(name=RETRY_COMPENSATION)
    async def retry_compensation(self, decision: CompensationDecision) -> str:
        """Retry a parked step; returns its status after the attempt."""
        entry = self.saga.decide(decision.step, "retry", decision.note, decision.operator)
        await workflow.wait_condition(lambda: entry.status in (DONE, PARKED, RESOLVED, SKIPPED))
        return entry.status

    @retry_compensation.validator
    def _validate_retry(self, decision: CompensationDecision) -> None:
        self.saga.check_parked(decision.step)

    @workflow.update(name=RESOLVE_COMPENSATION)
    async def resolve_compensation(self, decision: CompensationDecision) -> str:
        """Mark a parked step done by hand (the note says what was done)."""
        entry = self.saga.decide(decision.step, "resolve", decision.note, decision.operator)
        await workflow.wait_condition(lambda: entry.status == RESOLVED)
        return entry.status

    @resolve_compensation.validator
    def _validate_resolve(self, decision: CompensationDecision) -> None:
        self.saga.check_parked(decision.step)

    @workflow.update(name=SKIP_COMPENSATION)
    async def skip_compensation(self, decision: CompensationDecision) -> str:
        """Give up a parked step: it is not done, and the event says who chose that."""
        entry = self.saga.decide(decision.step, "skip", decision.note, decision.operator)
        await workflow.wait_condition(lambda: entry.status == SKIPPED)
        return entry.status

    @skip_compensation.validator
    def _validate_skip(self, decision: CompensationDecision) -> None:
        if not decision.note.strip():
            raise ValueError("a skip needs a note saying why the step is given up")
        self.saga.check_parked(decision.step)

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> SagaStatus:
        """Current step, status, step outcomes and the compensation log."""
        saga = self.saga
        base = SagaStatus(
            saga_id=saga.saga_id,
            status=saga.current_status,
            current_step=saga.current_step,
            completed_steps=list(saga.completed_steps),
            compensation_log=[replace(c) for c in saga.compensation_log],
            failure=saga.failure,
            saga_type=saga.saga_type,
            pivot_committed=saga.pivot_committed,
            steps=saga.step_states(),
            keys=dict(saga.keys),
        )
        return replace(base, **self.status_extras())

    @workflow.query(name=PLAN_QUERY)
    def plan(self) -> SagaPlan:
        """The exact compensation a cancel or failure would run now, with step outcomes."""
        return self.saga.plan()


class LinearSagaWorkflow(SagaWorkflow):
    """A saga that runs its declared steps in order (built by :func:`linear_saga`)."""

    async def run_linear(self, saga_input: Any) -> Any:
        """Run every step; compensate on failure or cancel; return the result model."""
        saga = self.saga
        await saga.start()
        results: dict[str, Any] = {}
        try:
            # run_step checks for a cancel before each step (see SagaState.check_cancelled).
            for step in self.definition.steps:
                ctx = StepContext(saga.saga_id, step.name, saga_input, results)
                assert step.action is not None, f"step {step.name} has no action"
                results[step.name] = await saga.run_step(
                    step.name,
                    step.action,
                    step.build(ctx) if step.build else saga_input,
                    compensation_arg=(step.undo(ctx) if step.undo else saga_input),
                )
        except (FailureError, SagaAborted) as err:
            reason = (
                str(err)
                if isinstance(err, SagaAborted)
                else f"step {saga.current_step} failed: {describe_failure(err)}"
            )
            undone = await saga.compensate(reason)
            return self._result(SagaResult(saga.saga_id, STATUS_COMPENSATED, reason, undone))
        except asyncio.CancelledError:
            # Why: CancelledError is not an Exception; a cancelled workflow still
            # undoes what it did before ending as cancelled.
            if not saga.pivot_committed:
                await saga.compensate("workflow cancelled")
            raise
        await saga.complete()
        return self._result(SagaResult(saga.saga_id, STATUS_COMPLETED, results=_plain(results)))

    def _result(self, result: SagaResult) -> Any:
        if self.definition.result is SagaResult:
            return result
        return self.definition.result(**_fields_of(self.definition.result, result))


def _plain(results: dict[str, Any]) -> dict[str, Any]:
    import dataclasses

    return {
        k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
        for k, v in results.items()
    }


def _fields_of(cls: type, result: SagaResult) -> dict[str, Any]:
    names = getattr(cls, "__dataclass_fields__", {})
    return {k: v for k, v in vars(result).items() if k in names}


def linear_saga(definition: SagaDefinition, class_name: str = "") -> type[LinearSagaWorkflow]:
    """The workflow class of a linear saga: its steps run in declaration order.

    Assign it at module level under ``class_name`` (default ``<name>Workflow``): the
    workflow sandbox re-imports the module and finds the class by that name. The
    workflow type is ``definition.name``; the saga id is the workflow id. Its result
    is ``definition.result`` built from a :class:`SagaResult` (fields by name), or
    the SagaResult itself.
    """
    definition.validate()
    saga_input_type = definition.input
    class_name = class_name or definition.name + "Workflow"
    # Why the caller's module: the class must be importable from where it is defined.
    module = sys._getframe(1).f_globals.get("__name__", __name__)

    def __init__(self: LinearSagaWorkflow, input: Any) -> None:
        self.init_saga(workflow.info().workflow_id, input)

    async def run(self: LinearSagaWorkflow, input: Any) -> Any:
        return await self.run_linear(input)

    # Why real types in the annotations: the SDK decodes the input payload into the
    # type hint of run's parameter (a string annotation would not resolve here).
    __init__.__annotations__ = {"input": saga_input_type, "return": None}
    run.__annotations__ = {"input": saga_input_type, "return": definition.result}
    run.__doc__ = f"Run the {definition.name} saga."
    __init__.__qualname__ = f"{class_name}.__init__"
    run.__qualname__ = f"{class_name}.run"
    __init__.__module__ = run.__module__ = module
    namespace = {
        "__init__": workflow.init(__init__),
        "run": workflow.run(run),
        "definition": definition,
        "__doc__": definition.description or f"The {definition.name} saga (linear).",
        "__module__": module,
        "__qualname__": class_name,
    }
    cls = type(class_name, (LinearSagaWorkflow,), namespace)
    return workflow.defn(name=definition.name)(cls)


__all__ = [
    "ENGINE_MEMO",
    "JOURNAL_OPTIONS",
    "LinearSagaWorkflow",
    "SagaWorkflow",
    "engine_options",
    "linear_saga",
    "record_saga_events",
]
