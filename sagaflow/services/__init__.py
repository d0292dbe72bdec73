"""The local service supervisor: PostgreSQL, Temporal, Kafka and RabbitMQ on loopback, one API for
the CLI and the test fixtures.

``LocalServices`` starts the services (in parallel, each on a free port unless the
settings fix one), waits for real readiness, records what runs in
``<data_dir>/services.json`` and stops everything it started by process id.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from sagaflow.services import kafka, postgres, rabbitmq, temporal
from sagaflow.services.base import ServiceError, ServiceInfo, process_alive
from sagaflow.settings import Settings, Transport

__all__ = ["SERVICE_NAMES", "LocalServices", "ServiceError", "ServiceInfo", "with_local_addresses"]

SERVICE_NAMES = ("postgres", "temporal", "kafka", "rabbitmq")


class _Service(Protocol):
    name: str

    def start(self) -> ServiceInfo: ...

    def prepare(self) -> None: ...

    def launch(self) -> None: ...

    def wait_ready(self) -> ServiceInfo: ...

    def stop(self, pid: int | None = None) -> None: ...


_PROBES = {
    "postgres": postgres.is_ready,
    "temporal": temporal.is_ready,
    "kafka": kafka.is_ready,
    "rabbitmq": rabbitmq.is_ready,
}


class LocalServices:
    """Starts, checks and stops the local services for one data folder."""

    def __init__(self, settings: Settings, *, detached: bool = False) -> None:
        self.settings = settings
        self.detached = detached
        self.state_file = settings.data_dir.resolve() / "services.json"
        self._services: dict[str, _Service] = {}
        self.running: dict[str, ServiceInfo] = {}

    def _make(self, name: str, recorded: ServiceInfo | None = None) -> _Service:
        match name:
            case "postgres":
                return postgres.PostgresService(self.settings, detached=self.detached)
            case "temporal":
                return temporal.TemporalService(self.settings, detached=self.detached)
            case "kafka":
                from sagaflow.services.kafka.cluster import KafkaCluster, is_cluster

                # Why the record too: 'services down' from a shell without
                # SAGAFLOW_KAFKA_BROKERS=3 must still stop all three nodes.
                if self.settings.kafka_brokers > 1 or (recorded and is_cluster(recorded)):
                    return KafkaCluster(self.settings, detached=self.detached)
                return kafka.KafkaService(self.settings, detached=self.detached)
            case "rabbitmq":
                return rabbitmq.RabbitMQService(self.settings, detached=self.detached)
        raise ServiceError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}")

    def default_names(self) -> list[str]:
        """The services this configuration needs locally (none that is given by address)."""
        names = []
        if not self.settings.database_url:
            names.append("postgres")
        if not self.settings.temporal_address:
            names.append("temporal")
        transport = self.settings.transport_kind
        if transport is Transport.KAFKA and not self.settings.kafka_bootstrap:
            names.append("kafka")
        if transport is Transport.RABBITMQ and not self.settings.rabbitmq_url:
            names.append("rabbitmq")
        return names

    def start(self, names: Iterable[str] | None = None) -> dict[str, ServiceInfo]:
        """Start the named services in parallel; on any failure stop those that started."""
        wanted = list(names) if names is not None else self.default_names()
        recorded = self.read_state()
        for name in wanted:
            if name in recorded and process_alive(recorded[name].pid):
                raise ServiceError(
                    f"{name} already runs for {self.settings.data_dir} (pid {recorded[name].pid}):"
                    f" use it, or stop it with 'sagaflow services down'"
                )
        services = {name: self._make(name) for name in wanted}
        errors: list[str] = []

        def collect(name: str, step: Callable[[], Any]) -> Any:
            try:
                return step()
            except ServiceError as exc:
                errors.append(f"{name}: {exc}")
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return None

        with ThreadPoolExecutor(max_workers=max(1, len(services))) as pool:
            # Slow preparation (initdb, Maven, storage format) runs in parallel.
            list(pool.map(lambda item: collect(item[0], item[1].prepare), services.items()))
            if not errors:
                # Why: children are launched from this thread, because their
                # parent-death signal fires when the *thread* that forked them ends.
                for name, svc in services.items():
                    collect(name, svc.launch)
            if not errors:
                infos = pool.map(
                    lambda item: collect(item[0], item[1].wait_ready), services.items()
                )
                for (name, svc), info in zip(services.items(), list(infos), strict=True):
                    if info is not None:
                        self.running[name] = info
                        self._services[name] = svc
        if errors:
            self.stop()
            # Why: a failed start may have left a child in the service's own object.
            for name, svc in services.items():
                if name not in self._services:
                    with contextlib.suppress(Exception):
                        svc.stop()
            raise ServiceError("; ".join(errors))
        self._write_state()
        return dict(self.running)

    def start_one(self, name: str) -> ServiceInfo:
        """(Re)start one service, e.g. after a crash, keeping the others."""
        service = self._make(name)
        info = service.start()
        self._services[name] = service
        self.running[name] = info
        self._write_state()
        return info

    def service(self, name: str) -> Any:
        """The object running service ``name`` (e.g. the Kafka cluster, to kill one node)."""
        if name not in self._services:
            raise ServiceError(f"{name} was not started by this supervisor")
        return self._services[name]

    def stop_one(self, name: str) -> None:
        """Stop one service by its process id."""
        info = self.running.pop(name, None) or self.read_state().get(name)
        service = self._services.pop(name, None) or self._make(name, info)
        if info is not None:
            service.stop(info.pid)
        self._write_state()

    def stop(self) -> None:
        """Stop every service this supervisor (or the state file) knows, in reverse order."""
        known = {**self.read_state(), **self.running}
        for name in reversed(SERVICE_NAMES):
            info = known.get(name)
            if info is None:
                continue
            service = self._services.get(name) or self._make(name, info)
            with contextlib.suppress(Exception):
                service.stop(info.pid)
        self.running.clear()
        self._services.clear()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def status(self) -> dict[str, tuple[ServiceInfo, bool, bool]]:
        """For each known service: its info, whether its process lives, whether it answers."""
        known = {**self.read_state(), **self.running}
        report = {}
        for name, info in known.items():
            alive = process_alive(info.pid)
            report[name] = (info, alive, alive and _PROBES[name](info))
        return report

    def read_state(self) -> dict[str, ServiceInfo]:
        """What the state file says runs."""
        if not self.state_file.exists():
            return {}
        raw = json.loads(self.state_file.read_text())
        return {name: ServiceInfo.from_json(entry) for name, entry in raw.items()}

    def _write_state(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        payload = {name: info.to_json() for name, info in self.running.items()}
        self.state_file.write_text(json.dumps(payload, indent=2))

    @contextlib.contextmanager
    def running_services(self, names: Iterable[str] | None = None) -> Iterator[LocalServices]:
        """Start on entry, stop on exit, also when the body raises or Ctrl-C is pressed."""
        try:
            self.start(names)
            yield self
        finally:
            self.stop()

    def urls(self) -> dict[str, str]:
        """Flat view of the running addresses (``postgres.url``, ``temporal.ui``...)."""
        return {
            f"{name}.{key}": value
            for name, info in self.running.items()
            for key, value in info.addresses.items()
        }


def with_local_addresses(settings: Settings) -> Settings:
    """Settings whose unset addresses are filled from services started by ``services up``."""
    running = LocalServices(settings).read_state()
    updates: dict[str, object] = {}
    if not settings.database_url and "postgres" in running:
        updates["database_url"] = running["postgres"].addresses["url"]
    if not settings.temporal_address and "temporal" in running:
        updates["temporal_address"] = running["temporal"].addresses["address"]
    temporal = running.get("temporal")
    if not settings.temporal_ui_url and temporal and "ui" in temporal.addresses:
        updates["temporal_ui_url"] = temporal.addresses["ui"]
    if not settings.kafka_bootstrap and "kafka" in running:
        bootstrap = running["kafka"].addresses["bootstrap"]
        updates["kafka_bootstrap"] = bootstrap
        # The local cluster's size decides the replication of the topics it creates.
        updates["kafka_brokers"] = len(bootstrap.split(","))
    if not settings.rabbitmq_url and "rabbitmq" in running:
        updates["rabbitmq_url"] = running["rabbitmq"].addresses["url"]
    return settings.model_copy(update=updates) if updates else settings


def process_settings(*, needs_database: bool = True) -> Settings:
    """The settings of a sagaflow process (worker, API, relay, projector, operator
    commands): the environment, then the addresses of the services ``sagaflow services
    up`` started for any left unset. The one path every process command takes, so
    they all find the same services and fail with the same message.

    Raises SettingsError (one line, naming the variable) for a bad value, or when no
    database is set and no local PostgreSQL runs.
    """
    from sagaflow.settings import SettingsError, load_settings

    settings = with_local_addresses(load_settings())
    if needs_database and not settings.database_url:
        raise SettingsError(
            "SAGAFLOW_DATABASE_URL is not set and no local PostgreSQL is running "
            f"(data folder {data_path(settings)}): start the local services with "
            "'sagaflow services up', or set SAGAFLOW_DATABASE_URL"
        )
    return settings


def data_path(settings: Settings) -> Path:
    """The resolved data folder."""
    return settings.data_dir.resolve()
