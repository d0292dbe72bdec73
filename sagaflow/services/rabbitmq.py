"""RabbitMQ from Debian's ``rabbitmq-server`` package, run as a plain process.

The broker gets its own Erlang port mapper (``epmd``) on a free port, its node name,
data, logs, config and plugin list under ``<data_dir>/rabbitmq``, and binds only to
loopback. The process tree is one shell (``sh`` → ``epmd`` and the
``rabbitmq-server`` script → ``beam.smp``) started in its own session, so stopping
the recorded pid's tree stops everything, epmd included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
from pathlib import Path

import psutil

from sagaflow.services.base import (
    ServiceError,
    ServiceInfo,
    ensure_port_free,
    free_port,
    spawn,
    stop_process,
    wait_until,
)
from sagaflow.settings import Settings

#: the consistent-hash exchange shards events by stream id into the projector's queues
PLUGINS = ("rabbitmq_consistent_hash_exchange",)
_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def server_script(settings: Settings) -> Path:
    """The broker start script; one line saying how to install it when it is missing."""
    script = settings.rabbitmq_bin_dir / "rabbitmq-server"
    if not script.exists():
        raise ServiceError(
            f"RabbitMQ is not installed ({script} missing): run "
            "'apt-get install -y rabbitmq-server', set SAGAFLOW_RABBITMQ_URL to a broker, "
            "or choose SAGAFLOW_TRANSPORT=kafka|embedded"
        )
    return script


def amqp_handshake(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when the port answers the AMQP 0-9-1 header with a Connection.Start frame."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(_PROTOCOL_HEADER)
        frame = sock.recv(16)
    # method frame (type 1) on channel 0, class 10 (connection) method 10 (start)
    return len(frame) >= 11 and frame[0] == 1 and frame[7:11] == b"\x00\x0a\x00\x0a"


class RabbitMQService:
    """One RabbitMQ node under ``<data_dir>/rabbitmq``."""

    name = "rabbitmq"

    def __init__(self, settings: Settings, *, detached: bool = False) -> None:
        self.settings = settings
        self.detached = detached
        self.root = settings.data_dir.resolve() / "rabbitmq"
        self.log_file = self.root / "rabbitmq.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _ports(self) -> dict[str, int]:
        # Why keep previous ports (and the node name): a restarted broker must come back
        # at the same address with the same data, so clients reconnect and durable
        # queues keep their messages.
        host, state_file = self.settings.host, self.root / "ports.json"
        previous = json.loads(state_file.read_text()) if state_file.exists() else {}
        chosen: dict[str, int] = {}
        for key, configured, setting in (
            ("port", self.settings.rabbitmq_port, "SAGAFLOW_RABBITMQ_PORT"),
            ("dist_port", self.settings.rabbitmq_dist_port, "SAGAFLOW_RABBITMQ_DIST_PORT"),
            ("epmd_port", 0, "SAGAFLOW_RABBITMQ_PORT"),
        ):
            if configured:
                ensure_port_free(host, configured, setting)
                chosen[key] = configured
                continue
            port = int(previous.get(key, 0))
            try:
                if not port:
                    raise OSError
                ensure_port_free(host, port, setting)
            except (OSError, ServiceError):
                port = free_port(host)
                while port in chosen.values():
                    port = free_port(host)
            chosen[key] = port
        state_file.write_text(json.dumps(chosen))
        return chosen

    def start(self) -> ServiceInfo:
        """Prepare, launch and wait: the whole start from the calling thread."""
        self.prepare()
        self.launch()
        return self.wait_ready()

    def prepare(self) -> None:
        """Check the package, choose ports, write the config and plugin list."""
        script = server_script(self.settings)
        self.root.mkdir(parents=True, exist_ok=True)
        ports = self._ports()
        host = self.settings.host
        node_file = self.root / "node.name"
        if not node_file.exists():
            node_file.write_text(f"sagaflow_{os.getpid()}_{ports['port']}@localhost")
        node = node_file.read_text().strip()
        home = self.root / "home"
        for sub in ("home", "mnesia", "logs"):
            (self.root / sub).mkdir(exist_ok=True)
        user = self.settings.rabbitmq_username
        password = self.settings.rabbitmq_password.get_secret_value()
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {host}:{ports['port']}\n"
            "log.console = false\n"
            "log.file.level = warning\n"
            f"default_user = {user}\n"
            f"default_pass = {password}\n"
            # Why: the guest user may only log in from loopback, which is where we are.
            "loopback_users = none\n"
        )
        (self.root / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")
        epmd = "/usr/bin/epmd" if Path("/usr/bin/epmd").exists() else "epmd"
        env = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_NODE_IP_ADDRESS": host,
            "RABBITMQ_NODE_PORT": str(ports["port"]),
            "RABBITMQ_DIST_PORT": str(ports["dist_port"]),
            "ERL_EPMD_PORT": str(ports["epmd_port"]),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "logs"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": ("-kernel inet_dist_use_interface {127,0,0,1}"),
        }
        # Why one shell: epmd must start first and stop last; as a foreground child of
        # the recorded pid it is part of the tree that stop() takes down.
        command = (
            f"{shlex.quote(epmd)} -address 127.0.0.1 -port {ports['epmd_port']} & "
            f"sleep 0.2; exec {shlex.quote(str(script))}"
        )
        self._argv = ["/bin/sh", "-c", command]
        self._env = env
        self._host, self._port = host, ports["port"]

    def launch(self) -> None:
        """Start the broker process tree (from the thread that owns the children)."""
        self.proc = spawn(self._argv, log_file=self.log_file, env=self._env, detached=self.detached)

    def wait_ready(self) -> ServiceInfo:
        """Wait until the broker answers the AMQP handshake."""
        assert self.proc is not None
        host, port = self._host, self._port
        wait_until(
            lambda: amqp_handshake(host, port),
            timeout_s=self.settings.service_start_timeout_s,
            what="RabbitMQ broker",
            proc=self.proc,
            log_file=self.log_file,
            interval_s=0.25,
        )
        user = self.settings.rabbitmq_username
        return ServiceInfo(
            name=self.name,
            pid=self.proc.pid,
            addresses={"url": f"amqp://{host}:{port}/", "user": user},
            data_dir=str(self.root / "mnesia"),
            log_file=str(self.log_file),
        )

    def stop(self, pid: int | None = None) -> None:
        """SIGTERM to the whole tree (beam stops in about a second), SIGKILL stragglers."""
        target = pid or (self.proc.pid if self.proc else None)
        if target:
            with contextlib.suppress(psutil.Error):
                # Why the tree: the shell wrapper does not forward signals to beam.
                for child in psutil.Process(target).children(recursive=True):
                    if child.name() != "epmd":
                        with contextlib.suppress(psutil.Error):
                            child.send_signal(signal.SIGTERM)
            stop_process(target, sig=signal.SIGTERM, timeout_s=15)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


def is_ready(info: ServiceInfo) -> bool:
    """True when the broker answers the AMQP handshake."""
    try:
        rest = info.addresses["url"].split("://", 1)[1].rstrip("/")
        host, _, port = rest.rpartition("@")[2].rpartition(":")
        return amqp_handshake(host, int(port))
    except Exception:
        return False
