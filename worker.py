"""The worker process: runs every registered saga type and its activities on one task queue.

``build_worker`` wires the activities with their dependencies (the only place that
does); ``run_worker`` connects, runs until SIGTERM/SIGINT and shuts down gracefully:
polling stops, running activities get ``worker_graceful_shutdown_s`` to finish
before they are cancelled (and retried elsewhere by Temporal).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities._support import FaultInjector
from activities.notification import LoggingNotifier, Notifier
from activities.payment import PaymentProvider
from activities.wiring import ActivityDeps, build_all
from eventstore import EventStore
from sagaflow.clients import connect_temporal
from sagaflow.settings import Settings, SettingsError
from workflows.definition import SagaDefinitionError
from workflows.registry import SagaRegistry, default_registry

log = logging.getLogger("sagaflow.worker")


def build_activities(
    settings: Settings,
    store: EventStore,
    *,
    provider: PaymentProvider | None = None,
    notifier: Notifier | None = None,
    registry: SagaRegistry | None = None,
) -> list[Callable[..., Any]]:
    """Every activity of every registered saga type, bound to its dependencies."""
    deps = ActivityDeps(
        settings,
        store,
        provider=provider,
        notifier=notifier or LoggingNotifier(),
        faults=FaultInjector(settings.fault_commit_then_fail, settings.fault_hang_after_commit),
    )
    return build_all(registry or default_registry(), deps)


ENGINE_MODULES = (
    "workflows.models",
    "workflows.definition",
    "workflows.visibility",
    "workflows.saga",
    "workflows.engine",
    "workflows.order_activities",
    "workflows.returns_models",
    "workflows.returns_activities",
)
"""The saga engine's own workflow-side modules: deterministic, no global state.

Passed through the sandbox (imported once per process) unless
``SAGAFLOW_WORKER_SANDBOX_ENGINE=false``. A saga flow's module (``order_saga``,
``returns_saga``, a team's own) is always re-imported per run, so the sandbox still
checks every saga's own code."""


def workflow_runner(*, engine_passthrough: bool = True) -> SandboxedWorkflowRunner:
    """The sandbox, with the pure, deterministic modules passed through.

    Why: the sandbox re-imports every other module into each new workflow run, and
    a saga run is short, so that import was the worker's largest cost: py-spy on a
    loaded worker found 23 % of its samples in building workflow instances, 9 % of
    them compiling the engine's source again (no bytecode is written when
    ``PYTHONDONTWRITEBYTECODE`` is set, as on this machine). The domain, pydantic
    and the engine's modules hold no state the workflows mutate, and the engine's
    modules call no clock, random source or I/O of their own (time is
    ``workflow.now()``, effects are activities); ``tests/unit`` checks the list
    imports nothing outside it but the standard library, temporalio and each other.
    """
    modules = ["domain", "pydantic", "pydantic_core", "annotated_types"]
    if engine_passthrough:
        modules += ENGINE_MODULES
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules)
    )


def build_worker(
    client: Client,
    settings: Settings,
    store: EventStore,
    *,
    task_queue: str | None = None,
    provider: PaymentProvider | None = None,
    notifier: Notifier | None = None,
    workflows: Sequence[type] | None = None,
    registry: SagaRegistry | None = None,
    interceptors: Sequence[Interceptor] = (),
    max_cached_workflows: int | None = None,
) -> Worker:
    """A worker for every registered saga type, with the concurrency limits from settings.

    Raises SagaDefinitionError (naming the type and step) when a definition breaks
    the step-kind rules: refused before anything polls.
    """
    registry = registry or default_registry()
    registry.validate()
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=list(workflows) if workflows is not None else registry.workflows,
        activities=build_activities(
            settings, store, provider=provider, notifier=notifier, registry=registry
        ),
        workflow_runner=workflow_runner(engine_passthrough=settings.worker_sandbox_engine),
        interceptors=list(interceptors),
        # From settings unless the caller says (the test kit runs uncached).
        max_cached_workflows=(
            settings.worker_max_cached_workflows
            if max_cached_workflows is None
            else max_cached_workflows
        ),
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_local_activities=settings.worker_max_concurrent_local_activities,
        max_concurrent_workflow_task_polls=settings.worker_workflow_task_pollers,
        max_concurrent_activity_task_polls=settings.worker_activity_task_pollers,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_graceful_shutdown_s),
        # Why shorter than Temporal's 10 s default: when a worker dies, the workflow
        # tasks already sent to its sticky queue wait this long before any other
        # worker may take them; a crashed worker should stall its sagas for seconds.
        sticky_queue_schedule_to_start_timeout=timedelta(
            seconds=settings.worker_sticky_schedule_to_start_s
        ),
    )


async def run_worker(settings: Settings) -> None:
    """Connect, run the worker until SIGTERM or SIGINT, then shut down gracefully."""
    if not settings.temporal_address:
        raise SettingsError("SAGAFLOW_TEMPORAL_ADDRESS: the worker needs a Temporal frontend")
    if not settings.database_url:
        raise SettingsError("SAGAFLOW_DATABASE_URL: the worker needs the event store's database")
    from eventstore.postgres import PostgresEventStore

    client = await connect_temporal(settings)  # TLS / API key from settings
    store = await PostgresEventStore.connect(settings.database_url, max_size=settings.db_pool_size)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            worker = build_worker(client, settings, store)
        except SagaDefinitionError as exc:
            raise SettingsError(f"saga definitions: {exc}") from None
        # Why: the modules, the sandbox and the clients live as long as the process;
        # frozen, full collections stop re-scanning them (a 100+ ms pause each in
        # the API before the same change there).
        gc.freeze()
        async with worker:
            log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
            await stop.wait()
            log.info("stopping: letting running activities finish")
        # Leaving the block ran worker.shutdown(): no new tasks, running ones finished
        # or cancelled after graceful_shutdown_timeout.
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await store.close()
