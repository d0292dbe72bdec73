"""Invariants: plain callables over what a scenario left behind.

An invariant takes an :class:`Observation` and raises AssertionError (with a message
saying what does not hold) or returns; it may be async. The engine's own invariants
hold for every saga type; a kit adds its business ones (stock, money).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from eventstore import EventStore, RecordedEvent
from eventstore.envelope import START
from sagaflow.testing.faults import FaultBoard
from sagaflow.testing.scenarios import Scenario
from workflows.definition import COMPENSATABLE, PIVOT, SagaDefinition
from workflows.models import SagaStatus

STUCK = "stuck"
"""Observed outcome of a saga that neither ended nor parked within the scenario's time."""

PARKED = "compensation_parked"
"""Observed outcome of a saga that ended the scenario waiting for an operator."""


@dataclass
class Observation:
    """What a scenario left behind: outcome, final status, journal and every event."""

    scenario: Scenario
    definition: SagaDefinition
    saga_id: str
    saga_input: Any
    outcome: str
    result: Any
    status: SagaStatus | None
    events: list[RecordedEvent]
    board: FaultBoard
    store: EventStore
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def journal(self) -> list[RecordedEvent]:
        """The saga's own events (its journal stream)."""
        from domain.saga_events import saga_stream

        stream = saga_stream(self.saga_id)
        return [e for e in self.events if e.stream_id == stream]

    def journal_types(self) -> list[str]:
        """The journal's event types, in order."""
        return [e.event_type for e in self.journal()]


Invariant = Callable[[Observation], "Awaitable[None] | None"]
"""An invariant: raises AssertionError when it does not hold."""


async def all_events(store: EventStore) -> list[RecordedEvent]:
    """Every event in the store, in feed order."""
    out: list[RecordedEvent] = []
    cursor = START
    while True:
        batch = await store.read_feed(cursor, limit=1000)
        if not batch:
            return out
        out.extend(batch)
        cursor = batch[-1].cursor


def ends_terminal_or_parked(obs: Observation) -> None:
    """The saga ends with a result, or parked for an operator: never stuck."""
    if obs.outcome == STUCK:
        status = obs.status.status if obs.status else "unknown"
        step = obs.status.current_step if obs.status else ""
        raise AssertionError(f"the saga is stuck (status {status!r}, step {step!r})")


def no_event_written_twice(obs: Observation) -> None:
    """No event id twice, and no stream holds the same fact (type and data) twice."""
    ids = Counter(e.event_id for e in obs.events)
    again = [str(i) for i, n in ids.items() if n > 1]
    assert not again, f"event ids written twice: {again[:3]}"
    facts = Counter(
        (e.stream_id, e.event_type, json.dumps(e.data, sort_keys=True, default=str))
        for e in obs.events
    )
    twice = [f"{s}: {t}" for (s, t, _), n in facts.items() if n > 1]
    assert not twice, f"facts written twice: {twice[:3]}"


def _compensated_steps(obs: Observation) -> list[str] | None:
    for event in reversed(obs.journal()):
        if event.event_type == "SagaCompensated":
            return list(event.data.get("compensated_steps", []))
    return None


def compensated_once_in_reverse(obs: Observation) -> None:
    """Every compensatable step that may have committed before the failure is undone
    exactly once (or resolved by the operator), in reverse order of the forward run
    (steps declared ``parallel`` may swap within their run)."""
    if obs.status is None:
        return
    undone = _compensated_steps(obs)
    if undone is None:
        return
    ran = [
        s.step
        for s in obs.status.steps
        if s.compensation and s.outcome not in ("not_started", "rejected")
    ]
    # A rejected step did not happen, but the engine still runs its (idempotent)
    # compensation, so it may appear in the undone list; nothing else may.
    rejected = {s.step for s in obs.status.steps if s.compensation and s.outcome == "rejected"}
    counts = Counter(undone)
    twice = [s for s, n in counts.items() if n > 1]
    assert not twice, f"compensated more than once: {twice}"
    missing = [s for s in ran if s not in counts]
    assert not missing, f"committed but never compensated: {missing} (undone: {undone})"
    extra = [s for s in undone if s not in ran and s not in rejected]
    assert not extra, f"compensated but never run: {extra}"
    forward = [s for s in ran if s in counts]
    order = [s for s in undone if s in forward]
    parallel = {s.name for s in obs.definition.steps if s.parallel}

    def base(step: str) -> str:
        return step.split(":", 1)[0]

    expected = list(reversed(forward))
    # Compare run by run: adjacent parallel steps form one run whose order is free.
    i = 0
    while i < len(expected):
        j = i + 1
        if base(expected[i]) in parallel:
            while j < len(expected) and base(expected[j]) in parallel:
                j += 1
        assert sorted(order[i:j]) == sorted(expected[i:j]), (
            f"compensations out of order: ran {order}, expected the reverse of {forward}"
        )
        i = j
    for step in ran:
        effects = obs.board.succeeded
        activity = next(s.compensation for s in obs.status.steps if s.step == step)
        entry = next((c for c in obs.status.compensation_log if c.step == step), None)
        if entry is not None and entry.status in ("resolved", "skipped"):
            continue
        assert effects[activity] >= 1, f"compensation {activity} of {step} never succeeded"


def never_compensates_across_pivot(obs: Observation) -> None:
    """Once the pivot committed, nothing is compensated and the saga only goes forward."""
    pivot = obs.definition.pivot
    if pivot is None or obs.status is None or not obs.status.pivot_committed:
        return
    types = obs.journal_types()
    assert "SagaCompensated" not in types, "compensated after the pivot committed"
    undo = {s.compensation_name for s in obs.definition.steps if s.kind is COMPENSATABLE}
    if pivot.kind is PIVOT and pivot.compensation_name:
        undo.add(pivot.compensation_name)
    ran = {name for name in undo if obs.board.succeeded[name]}
    assert not ran, f"compensations ran although the pivot committed: {sorted(ran)}"


ENGINE_INVARIANTS: tuple[Invariant, ...] = (
    ends_terminal_or_parked,
    no_event_written_twice,
    compensated_once_in_reverse,
    never_compensates_across_pivot,
)
"""Checked after every scenario of every saga type."""
