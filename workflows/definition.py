"""The engine's public API: declare a saga type once, get the machinery for free.

A saga type is a :class:`SagaDefinition`: a name, input and result models, its steps
(each a :class:`Step` with a kind) and, for sagas with their own flow, the points
where it waits (:class:`Wait`). Two ways to use one:

* **declarative** (a linear saga): give every step its ``action`` and argument
  builders, and :func:`linear_saga` builds the workflow class;
* **own flow** (loops, deadlines, people): subclass :class:`workflows.engine.SagaWorkflow`
  and drive ``self.saga.run_step(...)`` from ``run``; the declared steps are still
  the contract the engine enforces and the test kit derives scenarios from.

Step kinds follow Garcia-Molina's and Richardson's classification:

* ``compensatable``: has a compensation, undone in reverse if the saga fails
  before its pivot;
* ``pivot``: the go/no-go step; once it commits, the saga can only go forward;
* ``retriable``: after the pivot; retried until it succeeds, never compensated.

:meth:`SagaDefinition.validate` refuses a definition that breaks the order
(compensatable after the pivot, retriable before it, two pivots, a compensatable
step without a compensation) with a message naming the saga type and the step; the
worker calls it for every registered type before it polls.

No I/O here: the module is imported by workflow code inside the sandbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from workflows.models import RetryKnobs

ActivityRef = Callable[..., Awaitable[Any]]
"""A reference to an activity (a function or method decorated with ``activity.defn``)."""


class StepKind(StrEnum):
    """How a step behaves when the saga fails (see the module docstring)."""

    COMPENSATABLE = "compensatable"
    PIVOT = "pivot"
    RETRIABLE = "retriable"


COMPENSATABLE, PIVOT, RETRIABLE = StepKind.COMPENSATABLE, StepKind.PIVOT, StepKind.RETRIABLE


class SagaDefinitionError(ValueError):
    """A saga definition breaks the engine's rules; the message names type and step."""


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


@dataclass(frozen=True)
class Step:
    """One declared step.

    ``name`` is the step's name in journals, plans and operator actions; a step run
    once per item (the order saga reserves each line) runs as ``name:<item>``.
    ``action``/``compensation`` are activity references (never strings);
    ``build``/``undo`` make their arguments from a :class:`StepContext` in linear
    sagas (custom-flow sagas pass arguments to ``run_step`` themselves).
    ``parallel=True`` lets this compensation run together with its neighbours that
    also allow it (they must commute).
    """

    name: str
    kind: StepKind = COMPENSATABLE
    action: ActivityRef | None = None
    compensation: ActivityRef | None = None
    build: Callable[[StepContext], Any] | None = None
    undo: Callable[[StepContext], Any] | None = None
    options: StepOptions | None = None
    compensation_options: StepOptions | None = None
    parallel: bool = False
    description: str = ""

    @property
    def activity_name(self) -> str:
        """The action's activity type name ("" when the flow passes it at run time)."""
        return activity_name(self.action) if self.action else ""

    @property
    def compensation_name(self) -> str:
        """The compensation's activity type name ("" when none)."""
        return activity_name(self.compensation) if self.compensation else ""


@dataclass(frozen=True)
class Wait:
    """A point where the saga waits: for people (an update) or a durable timer.

    ``cancellable``: a cancel arriving here compensates (the test kit sends one at
    every cancellable wait). ``advance`` names the update that moves the saga on.
    The test kit also reads where the wait sits and how it looks from outside:
    ``before`` names the step it precedes, ``status`` is the saga's status while it
    waits here, ``on_timeout`` the result status when its timer expires.
    """

    name: str
    description: str = ""
    cancellable: bool = True
    timer: bool = False
    advance: str = ""
    before: str = ""
    status: str = ""
    on_timeout: str = ""


@dataclass(frozen=True)
class BusinessKey:
    """A business key shown in the Temporal UI and the saga read model.

    ``search_type`` is the Temporal search-attribute type (``keyword``, ``float``,
    ``int``); ``of`` reads the key's value from the saga input (keys known only later,
    like an order's total, are set by the flow with ``saga.set_key``).
    """

    name: str
    search_type: str = "keyword"
    of: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class StepContext:
    """What an argument builder of a linear saga sees: the input and earlier results."""

    saga_id: str
    step: str
    input: Any
    results: dict[str, Any]


@dataclass(frozen=True)
class SagaDefinition:
    """A saga type: declared once, read by the worker, the replayer, the API and the
    test kit (through :mod:`workflows.registry`)."""

    name: str
    input: type
    result: type
    steps: tuple[Step, ...]
    waits: tuple[Wait, ...] = ()
    keys: tuple[BusinessKey, ...] = ()
    description: str = ""
    summary: Callable[[Any], str] | None = None
    saga_id: Callable[[Any], str] | None = None

    def validate(self) -> SagaDefinition:
        """Raise SagaDefinitionError unless the steps respect the kind order; returns self."""
        seen: set[str] = set()
        pivot: Step | None = None
        for step in self.steps:
            where = f"saga {self.name!r}, step {step.name!r}"
            if not step.name or ":" in step.name:
                raise SagaDefinitionError(f"{where}: a step name is non-empty and has no ':'")
            if step.name in seen:
                raise SagaDefinitionError(f"{where}: declared twice")
            seen.add(step.name)
            if step.kind is COMPENSATABLE:
                if pivot is not None:
                    raise SagaDefinitionError(
                        f"{where}: a compensatable step cannot follow the pivot "
                        f"{pivot.name!r} (after the pivot the saga only goes forward)"
                    )
                if step.compensation is None:
                    raise SagaDefinitionError(f"{where}: a compensatable step needs a compensation")
            elif step.kind is PIVOT:
                if pivot is not None:
                    raise SagaDefinitionError(
                        f"{where}: a second pivot (the first is {pivot.name!r})"
                    )
                pivot = step
            elif step.kind is RETRIABLE:
                if pivot is None and any(s.kind is COMPENSATABLE for s in self.steps):
                    raise SagaDefinitionError(
                        f"{where}: a retriable step cannot come before the pivot "
                        "(declare the pivot first, or make the step compensatable)"
                    )
                if step.compensation is not None:
                    raise SagaDefinitionError(
                        f"{where}: a retriable step is never compensated; drop its compensation"
                    )
        for wait in self.waits:
            if wait.name in seen:
                raise SagaDefinitionError(
                    f"saga {self.name!r}: wait {wait.name!r} has a step's name"
                )
            if wait.before and wait.before not in seen:
                raise SagaDefinitionError(
                    f"saga {self.name!r}: wait {wait.name!r} comes before {wait.before!r}, "
                    "which is not a declared step"
                )
        return self

    def step(self, name: str) -> Step:
        """The declared step of a running step name (``reserve:A`` → ``reserve``)."""
        base = name.split(":", 1)[0]
        for step in self.steps:
            if step.name == base:
                return step
        known = ", ".join(s.name for s in self.steps)
        raise SagaDefinitionError(f"saga {self.name!r} declares no step {base!r} (steps: {known})")

    @property
    def pivot(self) -> Step | None:
        """The pivot step, if the saga has one."""
        return next((s for s in self.steps if s.kind is PIVOT), None)

    def index(self, name: str) -> int:
        """Position of a step (by running name) in the declaration."""
        return self.steps.index(self.step(name))

    def activities(self) -> list[str]:
        """Every activity type name the definition references (actions, compensations)."""
        names = [s.activity_name for s in self.steps] + [s.compensation_name for s in self.steps]
        return [n for n in dict.fromkeys(names) if n]


def activity_name(fn: Callable[..., Any]) -> str:
    """The activity type name of an ``activity.defn`` function or method."""
    defn = getattr(fn, "__temporal_activity_definition", None)
    return str(getattr(defn, "name", None) or getattr(fn, "__name__", "activity"))


def steps_of(definition: SagaDefinition, kinds: Sequence[StepKind]) -> list[Step]:
    """The declared steps of the given kinds, in order."""
    return [s for s in definition.steps if s.kind in kinds]
