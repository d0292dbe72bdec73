"""The engine's rules: step kinds refused at definition time and enforced at run time,
the plan preview equal to what compensation runs, escalation once, skip with a note.

Linear sagas of mock activities on the time-skipping server; the journal is a mock
under the real activity name that keeps every record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from workflows.definition import (
    COMPENSATABLE,
    PIVOT,
    RETRIABLE,
    SagaDefinition,
    SagaDefinitionError,
    Step,
    StepOptions,
)
from workflows.engine import ENGINE_MEMO, linear_saga
from workflows.models import (
    PLAN_QUERY,
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
from workflows.registry import SagaRegistry, SagaType, default_registry

CALLS: list[str] = []
JOURNAL: list[SagaRecord] = []
FAIL: dict[str, int] = {}
"""step name → failures left (-1: always; a negative count is a business rejection)."""
REJECT: set[str] = set()
GATE: dict[str, asyncio.Event] = {}

_FAST = StepOptions(retry=RetryKnobs(0.01, 1.0, 0.02, 2), start_to_close_s=30)


async def _act(name: str) -> str:
    CALLS.append(name)
    if name in GATE:
        await GATE[name].wait()
    if name in REJECT:
        raise ApplicationError(f"{name} refused", type="Refused", non_retryable=True)
    left = FAIL.get(name, 0)
    if left:
        FAIL[name] = left - 1 if left > 0 else left
        raise RuntimeError(f"{name} is down")
    return name


@activity.defn(name="t_a")
async def t_a(n: int) -> str:
    return await _act("a")


@activity.defn(name="t_undo_a")
async def t_undo_a(n: int) -> str:
    return await _act("undo_a")


@activity.defn(name="t_b")
async def t_b(n: int) -> str:
    return await _act("b")


@activity.defn(name="t_undo_b")
async def t_undo_b(n: int) -> str:
    return await _act("undo_b")


@activity.defn(name="t_c")
async def t_c(n: int) -> str:
    return await _act("c")


@activity.defn(name="t_undo_c")
async def t_undo_c(n: int) -> str:
    return await _act("undo_c")


@activity.defn(name="t_pivot")
async def t_pivot(n: int) -> str:
    return await _act("pivot")


@activity.defn(name="t_after")
async def t_after(n: int) -> str:
    return await _act("after")


@activity.defn(name="record_saga_events")
async def journal(records: list[SagaRecord]) -> None:
    JOURNAL.extend(records)


ACTIVITIES: list[Callable[..., Any]] = [
    t_a,
    t_undo_a,
    t_b,
    t_undo_b,
    t_c,
    t_undo_c,
    t_pivot,
    t_after,
    journal,
]

KINDS = SagaDefinition(
    name="KindsSaga",
    input=int,
    result=SagaResult,
    steps=(
        Step("a", COMPENSATABLE, t_a, t_undo_a, options=_FAST, parallel=True),
        Step("b", COMPENSATABLE, t_b, t_undo_b, options=_FAST, parallel=True),
        Step("c", COMPENSATABLE, t_c, t_undo_c, options=_FAST),
        Step("pivot", PIVOT, t_pivot, options=_FAST),
        Step("after", RETRIABLE, t_after, options=_FAST),
    ),
)
KindsSaga = linear_saga(KINDS, "KindsSaga")


@pytest.fixture
def env(time_skipping_env: WorkflowEnvironment) -> WorkflowEnvironment:
    """The session's time-skipping test server (tests/conftest.py)."""
    return time_skipping_env


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    JOURNAL.clear()
    FAIL.clear()
    REJECT.clear()
    GATE.clear()


async def _start(
    env: WorkflowEnvironment, queue: str, escalate_after_s: float = 0
) -> WorkflowHandle[Any, Any]:
    options = EngineOptions(search_attributes=False, escalate_after_s=escalate_after_s)
    return await env.client.start_workflow(
        "KindsSaga",
        1,
        id=f"k-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        memo={ENGINE_MEMO: dataclasses.asdict(options)},
        result_type=SagaResult,
    )


def _worker(env: WorkflowEnvironment, queue: str) -> Worker:
    return Worker(env.client, task_queue=queue, workflows=[KindsSaga], activities=ACTIVITIES)


def _kinds() -> list[str]:
    return [r.kind for r in JOURNAL]


async def _until(handle: WorkflowHandle[Any, Any], status: str) -> SagaStatus:
    for _ in range(400):
        found = await handle.query(STATUS_QUERY, result_type=SagaStatus)
        if found.status == status:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"never reached {status}; last {found}")


# --- definitions are refused when the kinds are out of order ----------------------


def _definition(*steps: Step) -> SagaDefinition:
    return SagaDefinition(name="Bad", input=int, result=SagaResult, steps=steps)


def test_a_compensatable_step_after_the_pivot_is_refused_naming_type_and_step() -> None:
    bad = _definition(Step("pay", PIVOT, t_pivot), Step("undo_me", COMPENSATABLE, t_a, t_undo_a))
    with pytest.raises(SagaDefinitionError, match="saga 'Bad', step 'undo_me'.*follow the pivot"):
        bad.validate()


def test_a_retriable_step_before_the_pivot_is_refused() -> None:
    bad = _definition(
        Step("a", COMPENSATABLE, t_a, t_undo_a),
        Step("notify", RETRIABLE, t_after),
        Step("p", PIVOT),
    )
    with pytest.raises(SagaDefinitionError, match="step 'notify'.*before the pivot"):
        bad.validate()


def test_two_pivots_and_a_compensatable_step_without_compensation_are_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="second pivot"):
        _definition(Step("p1", PIVOT), Step("p2", PIVOT)).validate()
    with pytest.raises(SagaDefinitionError, match="step 'a': a compensatable step needs"):
        _definition(Step("a", COMPENSATABLE, t_a)).validate()


def test_a_well_ordered_definition_and_every_registered_type_validate() -> None:
    assert KINDS.validate() is KINDS
    default_registry().validate()


async def test_the_worker_refuses_to_start_with_a_broken_definition(
    env: WorkflowEnvironment,
) -> None:
    from worker import build_worker

    bad = dataclasses.replace(
        KINDS, steps=(*KINDS.steps, Step("late", COMPENSATABLE, t_b, t_undo_b))
    )
    registry = SagaRegistry([SagaType(bad, KindsSaga, "activities.order_saga:build_activities")])
    with pytest.raises(SagaDefinitionError, match="saga 'KindsSaga', step 'late'"):
        build_worker(env.client, None, None, registry=registry)  # type: ignore[arg-type]


# --- the kinds at run time ----------------------------------------------------------


async def test_a_failure_before_the_pivot_compensates_in_reverse_with_parallel_groups(
    env: WorkflowEnvironment,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    REJECT.add("pivot")
    async with _worker(env, queue):
        result = await (await _start(env, queue)).result()
    assert result.status == "compensated"
    # The pivot has no compensation; c undone alone, then a and b together.
    assert result.compensated_steps == ["c", "b", "a"]
    assert CALLS[:4] == ["a", "b", "c", "pivot"]
    assert sorted(CALLS[4:]) == ["undo_a", "undo_b", "undo_c"] and CALLS[4] == "undo_c"


async def test_after_the_pivot_a_failure_retries_forward_and_never_compensates(
    env: WorkflowEnvironment,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    FAIL["after"] = 5  # more failures than the step's own policy allows (2 attempts)
    async with _worker(env, queue):
        result = await (await _start(env, queue)).result()
    assert result.status == "completed"
    assert CALLS.count("after") == 6
    assert not [c for c in CALLS if c.startswith("undo")]
    assert "SagaCompensated" not in _kinds()


async def test_a_retriable_step_rejected_after_the_pivot_parks_and_a_skip_records_who_and_why(
    env: WorkflowEnvironment,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    REJECT.add("after")
    async with _worker(env, queue):
        handle = await _start(env, queue)
        status = await _until(handle, "compensation_parked")
        assert [c.step for c in status.compensation_log if c.phase == "forward"] == ["after"]
        plan = await handle.query(PLAN_QUERY, result_type=SagaPlan)
        assert plan.pivot_committed and plan.compensation == []
        outcome = await handle.execute_update(
            SKIP_COMPENSATION,
            CompensationDecision("after", "sent by hand", "ops@example"),
            result_type=str,
        )
        result = await handle.result()
    assert outcome == "skipped"
    assert result.status == "completed"
    assert not [c for c in CALLS if c.startswith("undo")]
    skipped = next(r for r in JOURNAL if r.kind == "CompensationSkipped")
    assert (skipped.step, skipped.operator, skipped.note) == (
        "after",
        "ops@example",
        "sent by hand",
    )
    assert "StepParked" in _kinds()


async def test_the_plan_preview_is_exactly_what_compensation_then_runs(
    env: WorkflowEnvironment,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    GATE["c"] = asyncio.Event()
    REJECT.add("c")
    async with _worker(env, queue):
        handle = await _start(env, queue)
        for _ in range(400):
            if "c" in CALLS:
                break
            await asyncio.sleep(0.02)
        plan = await handle.query(PLAN_QUERY, result_type=SagaPlan)
        GATE["c"].set()
        result = await handle.result()
    outcomes = {s.step: s.outcome for s in plan.steps}
    assert outcomes == {
        "a": "committed",
        "b": "committed",
        "c": "in_flight",
        "pivot": "not_started",
        "after": "not_started",
    }
    assert plan.compensation == [["c"], ["b", "a"]]
    assert result.compensated_steps == [s for group in plan.compensation for s in group]


async def test_a_cancel_between_steps_compensates_what_committed(
    env: WorkflowEnvironment,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    GATE["b"] = asyncio.Event()
    async with _worker(env, queue):
        handle = await _start(env, queue)
        for _ in range(400):
            if "b" in CALLS:
                break
            await asyncio.sleep(0.02)
        cancel = asyncio.create_task(
            handle.execute_update("cancel", CancelRequest("changed my mind"), result_type=str)
        )
        await asyncio.sleep(0.1)
        GATE["b"].set()
        assert await cancel == "compensated"
        result = await handle.result()
    assert result.status == "compensated"
    assert result.reason == "cancelled: changed my mind"
    assert "c" not in CALLS and "undo_c" not in CALLS
    assert result.compensated_steps == ["b", "a"]


async def test_a_compensation_parked_past_the_bound_escalates_exactly_once(
    env: WorkflowEnvironment,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    REJECT.add("c")
    FAIL["undo_b"] = -1
    async with _worker(env, queue):
        handle = await _start(env, queue, escalate_after_s=60)
        await _until(handle, "compensation_parked")
        # Time-skipping: ten bounds pass while the compensation stays parked.
        await env.sleep(600)
        status = await handle.query(STATUS_QUERY, result_type=SagaStatus)
        FAIL.pop("undo_b")
        await handle.execute_update(
            "retry_compensation", CompensationDecision("b", "provider back", "ops"), result_type=str
        )
        result = await handle.result()
    assert [r.step for r in JOURNAL if r.kind == "CompensationEscalated"] == ["b"]
    assert next(c for c in status.compensation_log if c.step == "b").escalated
    assert result.status == "compensated"
    assert _kinds().count("CompensationParked") == 1


# --- wiring: contracts, implementations and the dependency direction ---------------


def test_every_activity_a_saga_declares_is_implemented_by_the_worker() -> None:
    from activities.wiring import ActivityDeps, build_all
    from eventstore.memory import InMemoryEventStore
    from sagaflow.settings import load_settings

    registry = default_registry()
    deps = ActivityDeps(load_settings(), InMemoryEventStore())
    implemented = {
        fn.__temporal_activity_definition.name  # type: ignore[attr-defined]
        for fn in build_all(registry, deps)
    }
    for saga_type in registry:
        missing = set(saga_type.definition.activities()) - implemented
        assert not missing, f"{saga_type.name}: no implementation of {sorted(missing)}"
    assert "record_saga_events" in implemented


def test_workflows_and_api_import_nothing_from_activities() -> None:
    import ast

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("workflows", "api"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "activities"]
    assert offenders == []
