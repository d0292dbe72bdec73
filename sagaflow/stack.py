"""The whole stack as separate processes: local services, worker, relay, projector, API.

Used by ``sagaflow dev`` and ``sagaflow demo`` and by the end-to-end tests: each
sagaflow process is started like in a deployment (its own interpreter, settings
from the environment) and stopped by process id, children first.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from sagaflow.services import LocalServices
from sagaflow.services.base import (
    ServiceError,
    free_port,
    spawn,
    stop_process,
    tail,
    wait_until,
)
from sagaflow.settings import Settings, Transport, load_settings

PROCESSES = ("worker", "relay", "projector", "api")
#: the processes of which a stack can run several copies (a fleet)
FLEETS = ("worker", "projector")


def fleet_names(kind: str, count: int) -> list[str]:
    """The process names of a fleet of ``count``: ``worker``, ``worker-2``, ...

    Why the first keeps the bare name: a fleet of one is the stack as it always was,
    and scenarios and logs that name ``worker`` or ``projector`` keep working."""
    return [kind] + [f"{kind}-{i}" for i in range(2, count + 1)]


def command_of(name: str) -> str:
    """The ``sagaflow`` command a stack process named ``name`` runs (``worker-2`` runs
    ``worker``)."""
    kind, _, copy = name.partition("-")
    if kind in PROCESSES and (not copy or copy.isdigit()):
        return kind
    raise ValueError(f"not a stack process name: {name!r}")


@dataclass
class Stack:
    """Local services plus sagaflow's processes, wired through SAGAFLOW_* variables."""

    settings: Settings
    extra_env: dict[str, str] = field(default_factory=dict)
    services: LocalServices | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    api_url: str = ""
    notes: list[str] = field(default_factory=list)
    #: how many workers (on the one task queue) and projectors (in the one group) run
    workers: int = 1
    projectors: int = 1

    def start(self) -> None:
        """Start the services, then the processes; wait until the API is ready."""
        for kind, count in (("worker", self.workers), ("projector", self.projectors)):
            if not 1 <= count <= 16:
                raise ServiceError(f"{kind}s: {count} is out of range (1 to 16)")
        settings = self.settings
        no_java = shutil.which(settings.java_bin) is None
        kafka = settings.transport_kind is Transport.KAFKA
        if kafka and not settings.kafka_bootstrap and no_java:
            self.notes.append(
                f"no Java ({settings.java_bin!r} not found): projections follow the event "
                "store's feed instead of Kafka (embedded mode)"
            )
            self.settings = settings = settings.with_transport(Transport.EMBEDDED)
        if self.projectors > 1 and settings.transport_kind is Transport.EMBEDDED:
            # Why refuse: every embedded projector reads the whole feed (there is no
            # group to share it); copies would repeat each other's work, not split it.
            raise ServiceError(
                f"{self.projectors} projectors need a broker to share the events: set "
                "SAGAFLOW_TRANSPORT=kafka or rabbitmq (the embedded feed has one reader)"
            )
        if not settings.api_port:
            # Why chosen before the services: the dev server's Web UI is told the API's
            # /codec address at start (encrypted payloads), and the port must be known.
            chosen = free_port(settings.api_host)
            self.settings = settings = settings.model_copy(update={"api_port": chosen})
        self.services = LocalServices(settings)
        try:
            self.services.start()
            self._start_processes()
        except BaseException:
            self.stop()
            raise

    def _start_processes(self) -> None:
        assert self.services is not None
        running = self.services.running
        port = self.settings.api_port
        env = {
            **os.environ,
            "SAGAFLOW_DATA_DIR": str(self.settings.data_dir),
            "SAGAFLOW_TRANSPORT": self.settings.transport_kind.value,
            "SAGAFLOW_KAFKA_ENABLED": "true" if self.settings.kafka_mode else "false",
            # Why: the relay and projector create the topics, replicated once per broker.
            "SAGAFLOW_KAFKA_BROKERS": str(self.settings.kafka_brokers),
            "SAGAFLOW_API_PORT": str(port),
            "SAGAFLOW_API_HOST": self.settings.api_host,
        }
        addresses = {
            "SAGAFLOW_DATABASE_URL": self.settings.database_url
            or (running["postgres"].addresses["url"] if "postgres" in running else None),
            "SAGAFLOW_TEMPORAL_ADDRESS": self.settings.temporal_address
            or (running["temporal"].addresses["address"] if "temporal" in running else None),
            "SAGAFLOW_TEMPORAL_UI_URL": self.settings.temporal_ui_url
            or (running["temporal"].addresses.get("ui") if "temporal" in running else None),
            "SAGAFLOW_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap
            or (running["kafka"].addresses["bootstrap"] if "kafka" in running else None),
            "SAGAFLOW_RABBITMQ_URL": self.settings.rabbitmq_url
            or (running["rabbitmq"].addresses["url"] if "rabbitmq" in running else None),
        }
        env.update({name: value for name, value in addresses.items() if value})
        env.update(self.extra_env)
        self.env = env
        logs = self.settings.data_dir.resolve() / "logs"
        embedded = self.settings.transport_kind is Transport.EMBEDDED
        counts = {"worker": self.workers, "projector": self.projectors}
        for kind in PROCESSES:
            if kind == "relay" and embedded:
                continue
            for name in fleet_names(kind, counts.get(kind, 1)):
                self.start_process(name)
        self.api_url = f"http://{self.settings.api_host}:{port}"
        wait_until(
            lambda: _http_ok(self.api_url + "/health"),
            timeout_s=60,
            what="sagaflow API",
            proc=self.procs["api"],
            log_file=logs / "api.log",
        )

    def start_process(self, name: str) -> subprocess.Popen[bytes]:
        """(Re)start one sagaflow process with the stack's environment (``worker-2``: a
        second worker, see ``fleet_names``)."""
        log = self.settings.data_dir.resolve() / "logs" / f"{name}.log"
        argv = [sys.executable, "-m", "sagaflow.cli", command_of(name)]
        proc = spawn(argv, log_file=log, env=self.env)
        self.procs[name] = proc
        time.sleep(0.2)
        if proc.poll() is not None:
            raise ServiceError(f"sagaflow {name} exited at once; log:\n{tail(log)}")
        return proc

    def start_extra_api(self, env_overrides: dict[str, str]) -> str:
        """Another API process with other settings (e.g. a backpressure bound); its URL."""
        port = free_port(self.settings.api_host)
        env = {**self.env, **env_overrides, "SAGAFLOW_API_PORT": str(port)}
        log = self.log_dir() / f"api-{port}.log"
        proc = spawn([sys.executable, "-m", "sagaflow.cli", "api"], log_file=log, env=env)
        self.procs[f"api-{port}"] = proc
        url = f"http://{self.settings.api_host}:{port}"
        wait_until(
            lambda: _http_ok(url + "/health"),
            timeout_s=60,
            what="sagaflow API",
            proc=proc,
            log_file=log,
        )
        return url

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one process (fault injection) and reap it."""
        proc = self.procs[name]
        proc.send_signal(sig)
        # Longer than the worker's graceful shutdown (SAGAFLOW_WORKER_GRACEFUL_SHUTDOWN_S).
        proc.wait(timeout=self.settings.worker_graceful_shutdown_s + 30)

    def stop(self) -> None:
        """Stop the processes (SIGTERM, graceful), then the services."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                stop_process(proc.pid, sig=signal.SIGTERM, timeout_s=40)
            proc.wait(timeout=10)
        self.procs.clear()
        if self.services is not None:
            self.services.stop()

    def log_dir(self) -> Path:
        """Where each process's log file is."""
        return self.settings.data_dir.resolve() / "logs"


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def stack_settings(**overrides: object) -> Settings:
    """Settings for a stack (environment plus overrides)."""
    return load_settings(**overrides)
