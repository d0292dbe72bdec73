"""The saga runner: steps with typed compensations and kinds, run inside a workflow.

One :class:`Saga` per workflow run, built from the saga type's
:class:`~workflows.definition.SagaDefinition`::

    saga = Saga(ORDER, "order-1", journal=record)
    await saga.start()
    reserved = await saga.run_step(
        "reserve:A", InventoryPort.reserve_stock, ReserveStock(...),
        options=step_options,
        compensation=InventoryPort.release_stock,
        compensation_arg=ReleaseStock(...),
    )
    ...
    await saga.compensate("PaymentDeclined: card declined")

Rules it enforces:

* a step's compensation is a reference to an activity (never a string) and is
  registered *just before* the step runs: an action whose outcome is unknown (it
  timed out after committing) is still undone; compensations are idempotent and a
  no-op when their action never happened;
* step kinds: a compensatable step may not run once the pivot committed; a
  retriable step may not run before it; after the pivot, ``compensate`` refuses and
  a failing retriable step is retried, then *parked* for an operator, never undone;
* on failure the registered compensations run in reverse order; consecutive ones
  declared ``parallel=True`` run together (``plan`` shows exactly these groups);
* a compensation that still fails after its retry policy is *parked*: recorded in
  the journal, then the saga waits for ``decide(step, "retry"|"resolve"|"skip")``
  (wired to workflow updates) -- it is never dropped; one parked longer than the
  escalation bound records CompensationEscalated once.

No I/O here: everything runs in the workflow sandbox and must be deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from workflows.definition import (
    COMPENSATABLE,
    PIVOT,
    RETRIABLE,
    SagaDefinition,
    SagaDefinitionError,
    StepOptions,
    activity_name,
)
from workflows.models import (
    CompensationEntry,
    EngineOptions,
    RetryKnobs,
    SagaPlan,
    SagaRecord,
    StepState,
)
from workflows.visibility import search_updates

__all__ = [
    "DONE",
    "PARKED",
    "RESOLVED",
    "SKIPPED",
    "Decision",
    "Saga",
    "SagaAborted",
    "StepOptions",
    "describe_failure",
    "execute",
    "failure_type",
    "retry_policy",
]

ArgT = TypeVar("ArgT")
ResT = TypeVar("ResT")

ActivityMethod = Callable[..., Awaitable[Any]]
"""An activity defined as a function or method (``InventoryPort.reserve_stock``)."""

Journal = Callable[[list[SagaRecord]], Awaitable[None]]
"""Appends saga events in one go (the workflow wires it to an activity)."""

Decision = Literal["retry", "resolve", "skip"]

ENGINE_PATCH = "sagaflow-engine-1"
"""Patch id of the engine's additions (search attributes, escalation, status events).

Why a patch: sagas started before the engine have histories without these commands;
``workflow.patched`` returns False when replaying them, so they replay unchanged."""

CANCEL_AT_DURABLE_PATCH = "sagaflow-cancel-at-durable-1"
"""Patch id of the rule that a cancel delivered in the current workflow task waits for
the next durable command (see :meth:`SagaState.check_cancelled`)."""

DURABLE_BARRIER_PATCH = "sagaflow-durable-barrier-1"
"""Patch id of the durable barrier (see :meth:`Saga.make_durable`): a compensation,
and a local step an update asked for, start only in a workflow task after the one
that decided them."""

ENGINE_2_PATCH = "sagaflow-engine-2"
"""Patch id of the engine's second generation, taken once in :meth:`Saga.start`: the
durable barrier and the cancel rule keyed on durable events, not on the history length
seen after a local activity.

Why a new generation: the SDK core answers a query that arrives while a local
activity's result is pending by completing the workflow task and forcing a new one
(``force_new_wft``); the workflow sees the result in that new task. A replay has no
queries and delivers the same result in the earlier task. So the history length read
after a local activity, and a ``workflow.patched`` first called there, differ between
the run and its replay (seen: ``Non-deprecated patch marker encountered for change
sagaflow-durable-barrier-1``, a cancel sent just after the start and a status query
while the first journal write ran; the run was stuck, its compensations done).
Runs recorded before this patch replay the first generation's rules unchanged."""

ENGINE_3_PATCH = "sagaflow-engine-3"
"""Patch id of the engine's third generation, the only patch a new run asks for: the
second generation's rules, and coalesced search-attribute upserts (see
:meth:`Saga._upsert`).

Why one patch for all: the SDK records each patch as a marker event plus an upsert of
``TemporalChangeVersion``, so the first two generations' patches cost every new run
two markers and two upserts. Why a patch at all: each upsert is a command; runs
recorded before upserted at every change and replay so."""

BARRIER = timedelta(milliseconds=1)
"""The barrier's timer: any duration works; its command ends the workflow task."""

# Compensation log states the query shows (see CompensationEntry).
PENDING, RUNNING, DONE, PARKED, RETRYING, RESOLVED, SKIPPED = (
    "pending",
    "running",
    "done",
    "parked",
    "retrying",
    "resolved",
    "skipped",
)

# Saga statuses the engine itself sets; flows add their own (awaiting_shipment...).
STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_COMPENSATING = "compensating"
STATUS_COMPENSATED = "compensated"
STATUS_PARKED = "compensation_parked"


class SagaAborted(Exception):
    """Raised inside the workflow to leave the forward path and compensate."""


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


async def execute(fn: ActivityMethod, arg: Any, options: StepOptions) -> Any:
    """Run an activity as a local or a regular activity."""
    timeout = timedelta(seconds=options.start_to_close_s)
    policy = retry_policy(options.retry)
    if options.local:
        return await workflow.execute_local_activity(
            fn, arg, start_to_close_timeout=timeout, retry_policy=policy
        )
    return await workflow.execute_activity(
        fn, arg, start_to_close_timeout=timeout, retry_policy=policy
    )


def _root(err: BaseException) -> BaseException:
    cause: BaseException = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    return cause


def describe_failure(err: BaseException) -> str:
    """``Type: message`` of the root business cause, for logs, events and queries."""
    cause = _root(err)
    if isinstance(cause, ApplicationError):
        return f"{cause.type or 'Error'}: {cause.message}"
    if isinstance(cause, FailureError):
        return f"{type(cause).__name__}: {cause.message}"
    return f"{type(cause).__name__}: {cause}"


def failure_type(err: BaseException) -> str:
    """The ApplicationError type of the root cause ("" for timeouts and the like)."""
    cause = _root(err)
    return (cause.type or "") if isinstance(cause, ApplicationError) else ""


def is_rejection(err: BaseException) -> bool:
    """A business refusal (non-retryable ApplicationError): the step did not happen.

    Anything else (timeout, crash, retries exhausted) leaves the outcome unknown: the
    step may have committed before it failed.
    """
    cause = _root(err)
    return isinstance(cause, ApplicationError) and cause.non_retryable


@dataclass
class _Compensation:
    step: str
    fn: ActivityMethod
    arg: Any
    options: StepOptions
    parallel: bool
    entry: CompensationEntry


def compensation_groups(stack: list[_Compensation]) -> list[list[_Compensation]]:
    """The registered compensations in the order they run: reversed, parallel runs
    grouped. Shared by ``compensate`` and ``plan`` so the preview is what runs."""
    pending = list(reversed(stack))
    groups: list[list[_Compensation]] = []
    while pending:
        group = [pending.pop(0)]
        while group[0].parallel and pending and pending[0].parallel:
            group.append(pending.pop(0))
        groups.append(group)
    return groups


class Saga:
    """The steps done so far and what undoes them; one per workflow run."""

    def __init__(
        self,
        definition: SagaDefinition,
        saga_id: str,
        *,
        journal: Journal,
        order_id: str | None = None,
        keys: dict[str, str] | None = None,
        options: EngineOptions | None = None,
    ) -> None:
        self.definition = definition
        self.saga_id = saga_id
        self.saga_type = definition.name
        self.order_id = order_id
        self.keys = dict(keys or {})
        self.options = options or EngineOptions()
        self.current_step = ""
        self.completed_steps: list[str] = []
        self.compensation_log: list[CompensationEntry] = []
        self.steps: dict[str, StepState] = {}
        self.compensating = False
        self.pivot_committed = False
        self.status = STATUS_RUNNING
        self.failure = ""
        self.cancel_reason: str | None = None
        #: the history length of the workflow task that delivered the cancel
        self._cancel_task = 0
        #: the history length of the workflow task that last delivered an update
        self._input_task = -1
        #: the history length at the latest durable event this run saw (engine 2)
        self._durable_len = 0
        #: whether this run has the engine's additions (False when replaying older runs)
        self.engine_features = False
        #: whether this run has the second generation's rules (see ENGINE_2_PATCH)
        self.engine_2 = False
        #: whether upserts wait for a durable command (see ENGINE_3_PATCH)
        self.coalesce_visibility = False
        self._journal = journal
        self._seq = 0
        self._stack: list[_Compensation] = []
        self._running_groups: list[list[_Compensation]] = []
        self._decisions: dict[str, tuple[Decision, str, str]] = {}
        self._buffer: list[SagaRecord] = []
        self._upserted: dict[str, Any] = {}

    # --- forward ----------------------------------------------------------------

    async def start(self) -> None:
        """Record SagaStarted as journal record 1 (with the journal's first write).

        Why first: the API appends the same SagaStarted with the same event id
        (workflow id, "journal", 1) to hand out a consistency token at once; one of
        the two is then a no-op. Runs before the third generation wrote it alone, in
        a local activity of its own.
        """
        # Why here, before the first command: the patch marker must sit at the same
        # place in every new history; old histories have no marker and replay the
        # pre-engine command sequence.
        # Why also here, and only here: a patch first asked for after a local activity
        # may be asked in another workflow task on replay (see ENGINE_2_PATCH).
        if workflow.patched(ENGINE_3_PATCH):
            self.engine_features = self.engine_2 = self.coalesce_visibility = True
        else:  # a run recorded by an earlier generation: replay it with its rules
            self.engine_features = workflow.patched(ENGINE_PATCH)
            self.engine_2 = self.engine_features and workflow.patched(ENGINE_2_PATCH)
        # Third generation: SagaStarted waits in the buffer for the journal's first
        # write (one local activity fewer per saga). The API appends it alone when it
        # starts the saga; the journal activity leaves it out of that write when the
        # stream already has it, so neither append is ever a partial duplicate.
        await self._record("SagaStarted", keys=self.keys, buffer=self.coalesce_visibility)

    async def run_step(
        self,
        name: str,
        action: ActivityMethod,
        arg: Any,
        *,
        options: StepOptions | None = None,
        compensation: ActivityMethod | None = None,
        compensation_arg: Any = None,
        compensation_options: StepOptions | None = None,
        parallel: bool | None = None,
    ) -> Any:
        """Run one declared step by its kind; record its completion.

        Compensatable: register the compensation, then run the action; the action's
        failure is raised unchanged (a FailureError) and the caller compensates.
        Pivot: the same, and once it commits the saga only goes forward. Retriable:
        retried; if it still fails it parks until an operator retries or skips it;
        returns None when skipped.
        """
        declared = self.definition.step(name)
        where = f"saga {self.saga_type!r}, step {name!r}"
        options = options or declared.options or StepOptions()
        state = self.steps.setdefault(name, StepState(name, declared.kind.value))
        if declared.kind is RETRIABLE:
            if not self.pivot_committed and self.definition.pivot is not None:
                raise SagaDefinitionError(f"{where}: a retriable step ran before the pivot")
            return await self._run_retriable(name, action, arg, options, state)
        if self.pivot_committed:
            raise SagaDefinitionError(f"{where}: a {declared.kind} step ran after the pivot")
        compensation = compensation or declared.compensation
        if declared.kind is COMPENSATABLE and compensation is None:
            raise SagaDefinitionError(f"{where}: a compensatable step needs a compensation")
        if options.local and self.engine_features:
            # An update of this very task asked for this step (ship, deliver, an
            # operator's retry): its delivery must be in the history before the
            # step commits. A regular activity needs no barrier:
            # its command is recorded with the update, in one task completion.
            await self.make_durable(unless_durable_input=True)
        self.check_cancelled(durable_next=not options.local)
        if compensation is not None:
            # Why before the action: if the action commits and then times out, its
            # outcome is unknown; the (idempotent) compensation must still run.
            entry = CompensationEntry(step=name, activity=activity_name(compensation))
            state.compensation = entry.activity
            self._stack.append(
                _Compensation(
                    name,
                    compensation,
                    compensation_arg,
                    compensation_options or declared.compensation_options or options,
                    declared.parallel if parallel is None else parallel,
                    entry,
                )
            )
            self.compensation_log.append(entry)
        self.current_step = name
        await self._upsert(durable=not options.local)
        state.outcome = "in_flight"
        try:
            result = await self._execute(action, arg, options)
        except FailureError as err:
            state.outcome = "rejected" if is_rejection(err) else "unknown"
            state.error = describe_failure(err)
            raise
        state.outcome = "committed"
        self.completed_steps.append(name)
        if declared.kind is PIVOT:
            self.pivot_committed = True
        # Why buffered: step completions are also visible as the steps' own events;
        # writing them with the next saga-level record saves an append per step. A
        # pivot is flushed at once: from here on the saga cannot be undone.
        await self._record(
            "SagaStepCompleted",
            step=name,
            buffer=not (self.pivot_committed and self.engine_features),
        )
        return result

    async def _run_retriable(
        self, name: str, action: ActivityMethod, arg: Any, options: StepOptions, state: StepState
    ) -> Any:
        # Why unlimited attempts: after the pivot there is no way back; the step must
        # eventually succeed (a non-retryable error still parks it for a person).
        options = replace(options, retry=replace(options.retry, max_attempts=0))
        if options.local and self.engine_features:
            await self.make_durable(unless_durable_input=True)  # see run_step
        self.current_step = name
        await self._upsert(durable=not options.local)
        entry: CompensationEntry | None = None
        while True:
            state.outcome = "in_flight"
            try:
                result = await self._execute(action, arg, options)
            except FailureError as err:
                state.outcome, state.error = "parked", describe_failure(err)
                if entry is None:
                    entry = CompensationEntry(
                        step=name, activity=activity_name(action), phase="forward"
                    )
                    self.compensation_log.append(entry)
                decision = await self._park(entry, state.error, forward=True)
                if decision == "retry":
                    continue
                state.outcome = SKIPPED if decision == "skip" else RESOLVED
                return None
            state.outcome = "committed"
            if entry is not None:
                entry.status, entry.error = DONE, ""
            self.completed_steps.append(name)
            await self._record("SagaStepCompleted", step=name, buffer=True)
            return result

    def request_cancel(self, reason: str) -> None:
        """Accept a cancel (the cancel update calls this); :meth:`check_cancelled` acts."""
        self.cancel_reason = reason
        # Why no note_input: a cancel's local steps are not a new decision; the lost
        # attempt of this task may have run them already, so they must run again to
        # be compensated (check_cancelled), and compensate() has its own barrier.
        self._cancel_task = self._observe_durable()

    def note_input(self) -> None:
        """Note that an update delivered in the current workflow task asks for work
        (a flow's own updates call this: ship, deliver, receive...); the local step
        it leads to waits behind :meth:`make_durable`."""
        self._input_task = self._observe_durable()

    def _observe_durable(self) -> int:
        """Note a durable event this run just saw; return the history length now.

        Call only where the history length is the same on every replay: in an update
        handler, or right after a timer or a regular activity resolved. Never after
        a local activity: a query may have moved its result into a later workflow
        task of the run than of the replay (see ENGINE_2_PATCH).
        """
        length = workflow.info().get_current_history_length()
        self._durable_len = max(self._durable_len, length)
        return length

    def _same_task(self, since: int) -> bool:
        """Whether no durable event came after the one at history length ``since``:
        then this may still be the workflow task that delivered it (engine 2)."""
        return self._durable_len == since

    async def _execute(self, fn: ActivityMethod, arg: Any, options: StepOptions) -> Any:
        """:func:`execute`; a regular activity's outcome is a durable event."""
        try:
            return await execute(fn, arg, options)
        finally:
            if not options.local:
                self._observe_durable()

    async def make_durable(self, *, unless_durable_input: bool = False) -> None:
        """End the current workflow task with a durable command before going on.

        Why: a local activity commits in the store before the workflow task that ran
        it completes. If that task is lost (the worker dies), Temporal runs it again
        from the history before it, and what decided the work may have changed
        meanwhile: an update delivered in the lost task is not in the history (and
        its caller may never send it again), and a local activity that failed there
        (out of stock) may succeed on the retry. Work done in the lost task on such
        a decision (releases, refunds, a shipment) would then contradict the path
        the saga takes: the store says compensated, Temporal says awaiting shipment
        (seen: a worker kill under load). Behind the barrier the decision is in the
        history first, so every retry takes the same path. A 1 ms timer costs one
        more workflow task, only on these paths.

        ``unless_durable_input``: skip the barrier unless an update was delivered in
        this very task (an older one is in the history already). Engine 2 counts an
        update as "this task" until a later durable event (see ENGINE_2_PATCH).
        """
        if self.engine_2:
            if unless_durable_input and not self._same_task(self._input_task):
                return
            await self.flush_visibility()
            await workflow.sleep(BARRIER)
            self._observe_durable()
            return
        # The first generation, for runs recorded with it: keyed on the history
        # length now and a patch asked for here (both unsafe after a local activity).
        current = workflow.info().get_current_history_length()
        if unless_durable_input and self._input_task != current:
            return
        if not workflow.patched(DURABLE_BARRIER_PATCH):
            return  # a run recorded before the barrier: replay it without one
        await workflow.sleep(BARRIER)

    def check_cancelled(self, *, durable_next: bool = False) -> None:
        """Raise SagaAborted when a cancel is due (call between steps).

        ``durable_next``: the next command is durable (a regular activity, a timer, a
        wait). Why it matters: a local activity commits before the workflow task that
        ran it completes. If that task is lost (the worker dies), Temporal retries it
        from the history before it, and a cancel that arrived meanwhile is delivered
        in the retry. The lost attempt may already have run (and committed) every
        local step up to its next durable command; stopping before them would orphan
        those commits, since no compensation is registered for a step this history
        never ran. So a cancel delivered in the current workflow task is due only
        right before a durable command; one delivered in an earlier task (every
        attempt of this task has seen it) is due at once. :meth:`run_step` calls this
        before every step, so a saga only needs it before commands of its own.

        A cancel accepted while the pivot was in flight is too late once the pivot
        commits: the saga goes forward (the cancel update answers so), never
        compensates across it. Found by the test kit (trip/charge_traveler/cancel).
        """
        if self.cancel_reason is None or self.pivot_committed:
            return
        if self.engine_2:
            # "This task" is "no durable event since the cancel": the history length
            # read here (maybe after a local activity) is not replay-safe.
            if self._same_task(self._cancel_task) and not durable_next:
                return
            raise SagaAborted(f"cancelled: {self.cancel_reason}")
        same_task = workflow.info().get_current_history_length() == self._cancel_task
        # Why the patch check only here: runs recorded before this rule aborted at
        # once; they replay so (no marker), new runs record the marker when deferring.
        if same_task and not durable_next and workflow.patched(CANCEL_AT_DURABLE_PATCH):
            return
        raise SagaAborted(f"cancelled: {self.cancel_reason}")

    async def complete(self, status: str = STATUS_COMPLETED) -> None:
        """Record SagaCompleted: every step succeeded; compensations stay registered.

        Why they stay: the order saga may still be cancelled (or time out) after the
        saga proper completed, and then the same compensations undo it.
        """
        self.current_step = ""
        self.status = status
        await self._record("SagaCompleted", status=status if self.engine_features else "")
        await self.flush_visibility()

    async def set_status(self, status: str, *, record: bool = True) -> None:
        """Move to a status of the saga's own flow; record it (engine runs only)."""
        if record and self.engine_features:
            # Why record first: handlers waiting for this status answer only once the
            # change is in the journal, so nothing of it is still in flight.
            await self._record("SagaStatusChanged", status=status, step=self.current_step)
        self.status = status
        await self._upsert()

    async def set_key(self, name: str, value: Any) -> None:
        """Set a business key known only while running (e.g. the order's total)."""
        self.keys[name] = str(value)
        await self._upsert(durable=False)

    # --- backward ---------------------------------------------------------------

    async def compensate(self, reason: str) -> list[str]:
        """Undo every registered step in reverse order; record SagaCompensated.

        Returns the compensated step names in the order they were undone. Parked
        compensations block here until an operator decides; none is skipped silently.
        Refuses (SagaDefinitionError) once the pivot committed.
        """
        if self.pivot_committed:
            raise SagaDefinitionError(
                f"saga {self.saga_type!r}: cannot compensate across the committed pivot"
            )
        # Why first: what decided to compensate (a failed local step, a cancel) must be
        # in the history before the first compensation commits.
        if self.engine_features:
            await self.make_durable()
        self.compensating = True
        self.failure = reason
        self.status = STATUS_COMPENSATING
        await self._upsert(durable=False)
        undone: list[str] = []
        self._running_groups = compensation_groups(self._stack)
        self._stack.clear()
        while self._running_groups:
            group = self._running_groups[0]
            self.current_step = "compensate:" + ",".join(c.step for c in group)
            await self._upsert(durable=any(not c.options.local for c in group))
            # Why gather is safe here: the SDK's event loop is deterministic and
            # gather schedules the activities in list order (asyncio.wait is not).
            await asyncio.gather(*(self._run_compensation(c) for c in group))
            self._running_groups.pop(0)
            undone.extend(c.step for c in group)
        self.current_step = ""
        self.compensating = False
        self.status = STATUS_COMPENSATED
        await self._record("SagaCompensated", reason=reason, steps=undone)
        await self.flush_visibility()
        return undone

    async def _run_compensation(self, comp: _Compensation) -> None:
        entry = comp.entry
        state = self.steps.get(comp.step)
        was_parked = False
        while True:
            entry.status = RUNNING
            entry.attempts += 1
            if state is not None:
                state.outcome = "compensating"
            try:
                await self._execute(comp.fn, comp.arg, comp.options)
            except FailureError as err:
                # Retries are exhausted (or the failure was non-retryable): park it.
                was_parked = True
                if state is not None:
                    state.outcome = PARKED
                decision = await self._park(entry, describe_failure(err), forward=False)
                if decision == "retry":
                    continue
                if state is not None:
                    state.outcome = RESOLVED if decision == "resolve" else SKIPPED
                return
            entry.status = DONE
            entry.error = ""
            if state is not None:
                state.outcome = "compensated"
            if was_parked:
                await self._record("CompensationResolved", step=comp.step, reason="retried")
            return

    async def _park(self, entry: CompensationEntry, error: str, *, forward: bool) -> Decision:
        """Park ``entry`` until an operator decides; record each decision."""
        entry.error, entry.status = error, PARKED
        entry.parked_at = workflow.now().isoformat()
        status_before = self.status
        self.status = STATUS_PARKED
        kind = "StepParked" if forward else "CompensationParked"
        await self._record(kind, step=entry.step, reason=error)
        await self.flush_visibility()  # the saga waits for a person from here
        step = entry.step
        escalate = self.options.escalate_after_s if self.engine_features else 0
        if escalate > 0 and not entry.escalated:
            try:
                # A durable timer: the bound holds across worker restarts.
                await workflow.wait_condition(
                    lambda: step in self._decisions, timeout=timedelta(seconds=escalate)
                )
            except TimeoutError:
                self._observe_durable()  # the escalation timer fired
                entry.escalated = True
                workflow.metric_meter().create_counter(
                    "sagaflow_compensations_escalated", "parked compensations escalated"
                ).add(1, {"saga_type": self.saga_type})
                await self._record("CompensationEscalated", step=step, reason=str(escalate))
        await workflow.wait_condition(lambda: step in self._decisions)
        if self.engine_features:
            # The operator's decision must be in the history before it is acted on.
            await self.make_durable(unless_durable_input=True)
        decision, note, operator = self._decisions.pop(step)
        entry.note, entry.operator = note, operator
        if not self.parked_steps:
            self.status = status_before if forward else STATUS_COMPENSATING
        if decision == "retry":
            await self._record("CompensationRetried", step=step, note=note, operator=operator)
        elif decision == "resolve":
            entry.status = RESOLVED
            await self._record(
                "CompensationResolved",
                step=step,
                reason=f"resolved manually: {note}" if note else "resolved manually",
                note=note,
                operator=operator,
            )
        else:
            entry.status = SKIPPED
            await self._record("CompensationSkipped", step=step, note=note, operator=operator)
        return decision

    # --- operator decisions (wired to workflow updates) -------------------------

    @property
    def parked_steps(self) -> list[str]:
        """Steps whose compensation (or forward retry) waits for an operator."""
        return [c.step for c in self.compensation_log if c.status == PARKED]

    def check_parked(self, step: str) -> None:
        """Raise ApplicationError unless ``step`` is parked (used by validators)."""
        if step not in self.parked_steps:
            parked = ", ".join(self.parked_steps) or "none"
            raise ApplicationError(
                f"saga {self.saga_id}: compensation of step {step!r} is not parked "
                f"(parked: {parked})",
                type="NotParked",
                non_retryable=True,
            )

    def decide(
        self, step: str, decision: Decision, note: str = "", operator: str = ""
    ) -> CompensationEntry:
        """Hand a parked step the operator's decision; returns its log entry."""
        self.check_parked(step)
        entry = next(c for c in self.compensation_log if c.step == step and c.status == PARKED)
        entry.status = RETRYING if decision == "retry" else RUNNING
        self._decisions[step] = (decision, note, operator)
        self.note_input()
        return entry

    # --- plan -------------------------------------------------------------------

    def plan(self) -> SagaPlan:
        """The compensation a cancel or failure would run now, and every step's outcome."""
        if self.compensating:
            groups = [[c.step for c in g] for g in self._running_groups]
            note = "compensating: the groups left to run"
        elif self.pivot_committed:
            groups = []
            note = "the pivot committed: failures retry forward, nothing is compensated"
        else:
            groups = [[c.step for c in g] for g in compensation_groups(self._stack)]
            note = "" if groups else "nothing to compensate yet"
        return SagaPlan(
            saga_id=self.saga_id,
            saga_type=self.saga_type,
            status=self.current_status,
            pivot_committed=self.pivot_committed,
            compensation=groups,
            steps=self.step_states(),
            note=note,
        )

    def step_states(self) -> list[StepState]:
        """Every step instance run so far, then the declared steps not started yet."""
        states = [replace(s) for s in self.steps.values()]
        started = {s.step.split(":", 1)[0] for s in states}
        for step in self.definition.steps:
            if step.name not in started:
                states.append(
                    StepState(step.name, step.kind.value, compensation=step.compensation_name)
                )
        return states

    @property
    def current_status(self) -> str:
        """The status, with ``compensation_parked`` while anything is parked."""
        return STATUS_PARKED if self.parked_steps else self.status

    # --- journal and visibility -------------------------------------------------

    async def flush_visibility(self) -> None:
        """Upsert what changed before a durable command of the flow's own (a regular
        activity it runs with :func:`execute`); a no-op in runs recorded before
        :data:`ENGINE_3_PATCH`, which upserted at each change."""
        if self.coalesce_visibility:
            await self._upsert()

    async def _upsert(self, *, durable: bool = True) -> None:
        """Upsert the search attributes that changed (engine runs with them enabled).

        Why only on change: every upsert is a command in history; unchanged values
        would only grow it. ``durable`` False: the change comes before a local
        activity or a journal write, within the same workflow task, so nobody could
        see it before the task's next durable command; runs with
        :data:`ENGINE_3_PATCH` leave it to that command's upsert (a regular step,
        the barrier, a wait after a status, the end), one upsert per workflow task
        instead of one per change (8 per order before: 11 % of the stack's CPU
        went to search attributes, bench.stack --compare saga_search_attributes).
        """
        if not (self.engine_features and self.options.search_attributes):
            return
        if not durable and self.coalesce_visibility:
            return
        updates = search_updates(self, self._upserted)
        if updates:
            workflow.upsert_search_attributes(updates)

    async def _record(
        self,
        kind: str,
        *,
        step: str = "",
        reason: str = "",
        steps: list[str] | None = None,
        buffer: bool = False,
        operator: str = "",
        note: str = "",
        status: str = "",
        keys: dict[str, str] | None = None,
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
                operator=operator,
                note=note,
                status=status,
                keys=dict(keys or {}),
            )
        )
        if not buffer:
            # A journal write is a local activity: a change it records is upserted
            # now only in runs recorded before ENGINE_3_PATCH.
            await self._upsert(durable=False)
            records, self._buffer = self._buffer, []
            await self._journal(records)
