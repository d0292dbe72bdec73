"""The failure matrix of a saga type, derived from its definition (pure, no I/O).

Every scenario is named ``<type>/<point>/<case>``: ``point`` is a declared step or
wait, ``case`` what happens there. Adding a step (or a wait) to a definition adds
its scenarios; nothing here lists a saga's cases by hand.

Cases, by where they apply:

* every step: ``reject`` (a business refusal, never retried), ``commit_then_timeout``
  (the step commits, then its answer is lost), ``fail_before_commit`` (it fails
  without committing). Before and at the pivot the failures last until the retry
  policy gives up: the outcome is unknown and the compensation must undo the step,
  or do nothing when it never happened. A step without a compensation (the pivot of
  some sagas, every retriable step) only ever goes forward, so its technical
  failures are transient (the first attempts), and a refusal of a retriable step
  parks it until an operator retries it.
* every step with a compensation: ``compensation_retried`` / ``compensation_resolved``
  (the compensation fails until parked, then an operator retries or resolves it),
  ``cancel_while_parked`` (a cancel lands while it is parked: refused).
* every step up to the pivot: ``cancel`` (a cancel lands while it is in flight,
  i.e. between the step before and the step after).
* every wait: ``cancel`` (a cancel lands while the saga waits there), and for
  timers ``timer_expires``.
* every step, wait and the parked state: ``worker_replaced`` (the worker is replaced
  there; a new one replays the history and carries on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from workflows.definition import COMPENSATABLE, PIVOT, RETRIABLE, SagaDefinition, Step

COMPLETED = "completed"
"""Expected outcome placeholder: the kit's ``completed`` status (``delivered`` for orders)."""

COMPENSATED = "compensated"
"""Expected outcome: every committed compensatable step undone."""


class Mode(StrEnum):
    """How an injected fault behaves."""

    REJECT = "reject"
    COMMIT_THEN_FAIL = "commit_then_fail"
    FAIL_BEFORE_COMMIT = "fail_before_commit"
    GATE = "gate"


@dataclass(frozen=True)
class Fault:
    """A fault on one activity type of the scenario's saga.

    ``attempts``: how many calls fail (0: every call until the kit lifts it).
    A ``gate`` holds the first call until the kit has acted (cancel, new worker).
    """

    activity: str
    mode: Mode
    attempts: int = 0


@dataclass(frozen=True)
class Scenario:
    """One cell of the matrix."""

    saga_type: str
    point: str
    case: str
    expected: str
    faults: tuple[Fault, ...] = ()
    kind: str = ""
    """``step``, ``wait``, ``compensation``, ``parked`` or ``happy``."""
    operator: str = ""
    """What the operator does when something parks: ``retry`` or ``resolve``."""
    cancel_at: str = ""
    """Send a cancel at this point (a gated step, a wait, ``parked``)."""
    cancel_refused: bool = False
    """Whether that cancel must be refused (too late, or while compensating)."""
    replace_at: str = ""
    """Replace the worker at this point (a gated step, a wait, ``parked``)."""
    expire: str = ""
    """Let the timer of this wait expire instead of advancing the saga."""
    notes: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        """The readable test id, e.g. ``order_saga/charge/commit_then_timeout``."""
        return f"{self.saga_type}/{self.point}/{self.case}"


TRANSIENT_ATTEMPTS = 2
"""How many attempts a transient fault fails (then the step succeeds)."""


def _failure_expectation(definition: SagaDefinition, step: Step) -> str:
    if step.kind is RETRIABLE:
        return COMPLETED
    return COMPENSATED


def _trigger_after(definition: SagaDefinition, step: Step) -> Step | None:
    """The step whose refusal makes ``step``'s compensation run: the next one that
    may still fail backwards (compensatable or the pivot)."""
    later = definition.steps[definition.steps.index(step) + 1 :]
    return next((s for s in later if s.kind in (COMPENSATABLE, PIVOT)), None)


def matrix(definition: SagaDefinition, label: str | None = None) -> list[Scenario]:
    """Every scenario of ``definition``'s failure matrix, in a stable order.

    ``label`` names the type in scenario ids (default: the workflow type name)."""
    name = label or definition.name
    pivot = definition.pivot
    out: list[Scenario] = [Scenario(name, "all", "happy_path", COMPLETED, kind="happy")]
    steps = definition.steps
    pivot_index = steps.index(pivot) if pivot is not None else len(steps) - 1
    for index, step in enumerate(steps):
        act = step.activity_name
        backwards = step.kind is not RETRIABLE and step.compensation is not None
        out.append(
            Scenario(
                name,
                step.name,
                "reject",
                _failure_expectation(definition, step),
                (Fault(act, Mode.REJECT),),
                kind="step",
                operator="retry" if step.kind is RETRIABLE else "",
            )
        )
        attempts = 0 if backwards else TRANSIENT_ATTEMPTS
        expected = COMPENSATED if backwards else COMPLETED
        for case, mode in (
            ("commit_then_timeout", Mode.COMMIT_THEN_FAIL),
            ("fail_before_commit", Mode.FAIL_BEFORE_COMMIT),
        ):
            out.append(
                Scenario(name, step.name, case, expected, (Fault(act, mode, attempts),), "step")
            )
        if step.kind is not RETRIABLE and step.compensation is not None:
            trigger = _trigger_after(definition, step)
            if trigger is not None:
                undo = step.compensation_name
                faults = (Fault(trigger.activity_name, Mode.REJECT), Fault(undo, Mode.REJECT))
                for decision in ("retry", "resolve"):
                    out.append(
                        Scenario(
                            name,
                            step.name,
                            f"compensation_{'retried' if decision == 'retry' else 'resolved'}",
                            COMPENSATED,
                            faults,
                            kind="compensation",
                            operator=decision,
                        )
                    )
                out.append(
                    Scenario(
                        name,
                        step.name,
                        "cancel_while_parked",
                        COMPENSATED,
                        faults,
                        kind="compensation",
                        operator="retry",
                        cancel_at="parked",
                        cancel_refused=True,
                    )
                )
        if index <= pivot_index and index > 0:
            # A cancel while this step is in flight: accepted before the pivot commits
            # (the step is then undone with the others); at the pivot itself the saga
            # may refuse it or find it too late, and goes forward either way.
            at_pivot = step.kind is PIVOT
            out.append(
                Scenario(
                    name,
                    step.name,
                    "cancel",
                    COMPLETED if at_pivot else COMPENSATED,
                    (Fault(act, Mode.GATE),),
                    kind="step",
                    cancel_at=step.name,
                )
            )
        out.append(
            Scenario(
                name,
                step.name,
                "worker_replaced",
                COMPLETED,
                (Fault(act, Mode.GATE),),
                kind="step",
                replace_at=step.name,
            )
        )
    for wait in definition.waits:
        refused = not wait.cancellable
        out.append(
            Scenario(
                name,
                wait.name,
                "cancel",
                COMPLETED if refused else COMPENSATED,
                kind="wait",
                cancel_at=wait.name,
                cancel_refused=refused,
            )
        )
        if wait.timer:
            out.append(
                Scenario(
                    name,
                    wait.name,
                    "timer_expires",
                    wait.on_timeout or COMPENSATED,
                    kind="wait",
                    expire=wait.name,
                )
            )
        out.append(
            Scenario(
                name, wait.name, "worker_replaced", COMPLETED, kind="wait", replace_at=wait.name
            )
        )
    undoable = [
        s
        for s in steps
        if s.kind is not RETRIABLE and s.compensation and _trigger_after(definition, s)
    ]
    first_undo = undoable[0] if undoable else None
    if first_undo is not None:
        trigger = _trigger_after(definition, first_undo)
        assert trigger is not None
        out.append(
            Scenario(
                name,
                "parked",
                "worker_replaced",
                COMPENSATED,
                (
                    Fault(trigger.activity_name, Mode.REJECT),
                    Fault(first_undo.compensation_name, Mode.REJECT),
                ),
                kind="parked",
                operator="retry",
                replace_at="parked",
                notes=(f"parks the compensation of {first_undo.name}",),
            )
        )
    return out
