"""Apache Kafka 3.9 in KRaft combined mode, from Maven Central jars, on the machine's Java."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

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

KAFKA_VERSION = "3.9.1"
POM = Path(__file__).with_name("pom.xml")

LOG4J_PROPERTIES = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
"""


def default_jars_dir() -> Path:
    """Where ``install_jars`` puts the broker's jars unless SAGAFLOW_KAFKA_JARS_DIR says."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sagaflow" / f"kafka-{KAFKA_VERSION}" / "libs"


def jars_dir(settings: Settings) -> Path:
    """The configured jar folder, or the default one."""
    return (settings.kafka_jars_dir or default_jars_dir()).resolve()


def _require_tool(binary: str, setting: str, purpose: str) -> str:
    found = shutil.which(binary)
    if not found:
        raise ServiceError(
            f"{binary!r} not found ({setting}): {purpose}, "
            f"or set SAGAFLOW_KAFKA_ENABLED=false to run projections on the event store's feed"
        )
    return found


def install_jars(settings: Settings) -> Path:
    """Fetch Kafka and its dependencies from Maven Central with Maven (cached in ~/.m2)."""
    target = jars_dir(settings)
    if (target / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return target
    mvn = _require_tool(settings.maven_bin, "SAGAFLOW_MAVEN_BIN", "install Apache Maven")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(POM), f"-Dlibs.dir={staging}", "package"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"Maven could not fetch the Kafka jars (exit {result.returncode}): "
            f"{(result.stdout + result.stderr).strip()[-800:]}"
        )
    # Why: rename last, so an interrupted download is never mistaken for a complete one.
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def jvm_command(java: str, libs: Path, root: Path, heap_mb: int, *extra: str) -> list[str]:
    """The JVM part of every Kafka command line (heap, GC, logging, class path)."""
    return [
        java, f"-Xmx{heap_mb}m", f"-Xms{heap_mb}m", *extra, "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{root / 'log4j.properties'}",
        f"-Dkafka.logs.dir={root / 'logs'}",
        "-cp", f"{libs}/*",
    ]  # fmt: skip


def format_storage(
    jvm: list[str], cluster_id: str, props: Path, extra_args: list[str] | None = None
) -> None:
    """Format a node's log folder for ``cluster_id`` (skipped when already formatted)."""
    fmt = subprocess.run(
        [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
            "--ignore-formatted",
            *(extra_args or []),
        ],
        capture_output=True,
        text=True,
    )
    if fmt.returncode != 0:
        raise ServiceError(f"formatting Kafka storage failed: {fmt.stderr.strip()[-500:]}")


def require_java(settings: Settings) -> str:
    """The Java binary, or a one-line error saying how to get one."""
    return _require_tool(settings.java_bin, "SAGAFLOW_JAVA_BIN", "install Java 17+")


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding, not starting with '-'."""
    return _cluster_id()


def _cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


async def _metadata_ready(bootstrap: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    # Why: while the broker boots, every failed probe would log a connection error.
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.describe_cluster()
        return True
    finally:
        await admin.close()
        logger.setLevel(level)


class KafkaService:
    """One KRaft node (broker + controller) under ``<data_dir>/kafka``."""

    name = "kafka"

    def __init__(self, settings: Settings, *, detached: bool = False) -> None:
        self.settings = settings
        self.detached = detached
        self.root = settings.data_dir.resolve() / "kafka"
        self.log_file = self.root / "kafka.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: appended to server.properties (a later key wins): extra listeners, SASL, TLS
        self.extra_properties = ""
        #: appended to the storage format command (e.g. --add-scram for SCRAM users)
        self.format_args: list[str] = []

    def _ports(self) -> tuple[int, int]:
        # Why: a restarted node keeps its previous ports when they are free, so clients
        # holding the old bootstrap address reconnect to the same broker.
        host, state_file = self.settings.host, self.root / "ports.json"
        previous = json.loads(state_file.read_text()) if state_file.exists() else {}
        chosen = []
        for key, configured, setting in (
            ("port", self.settings.kafka_port, "SAGAFLOW_KAFKA_PORT"),
            (
                "controller_port",
                self.settings.kafka_controller_port,
                "SAGAFLOW_KAFKA_CONTROLLER_PORT",
            ),
        ):
            if configured:
                ensure_port_free(host, configured, setting)
                chosen.append(configured)
                continue
            port = int(previous.get(key, 0))
            try:
                if not port:
                    raise OSError
                ensure_port_free(host, port, setting)
            except (OSError, ServiceError):
                port = free_port(host)
            chosen.append(port)
        state_file.write_text(json.dumps({"port": chosen[0], "controller_port": chosen[1]}))
        return chosen[0], chosen[1]

    def start(self) -> ServiceInfo:
        """Prepare, launch and wait: the whole start from the calling thread."""
        self.prepare()
        self.launch()
        return self.wait_ready()

    def prepare(self) -> None:
        """Fetch jars if missing, choose ports, format the storage once."""
        java = require_java(self.settings)
        libs = install_jars(self.settings)
        self.root.mkdir(parents=True, exist_ok=True)
        data = self.root / "data"
        port, cport = self._ports()
        host = self.settings.host
        cid_file = self.root / "cluster.id"
        if not cid_file.exists():
            cid_file.write_text(_cluster_id())
        props = self.root / "server.properties"
        props.write_text(
            node_properties(
                node=1,
                host=host,
                port=port,
                cport=cport,
                voters=f"1@{host}:{cport}",
                data=data,
                replicas=1,
            )
            + self.extra_properties
        )
        (self.root / "log4j.properties").write_text(LOG4J_PROPERTIES)
        jvm = jvm_command(java, libs, self.root, self.settings.kafka_broker_heap_mb, "-XX:+UseG1GC")
        if not (data / "meta.properties").exists():
            format_storage(jvm, cid_file.read_text().strip(), props, self.format_args)
        self._argv = [*jvm, "kafka.Kafka", str(props)]
        self._bootstrap = f"{host}:{port}"
        self._data = data

    def launch(self) -> None:
        """Start the broker process (from the thread that owns the children)."""
        self.proc = spawn(self._argv, log_file=self.log_file, detached=self.detached)

    def wait_ready(self) -> ServiceInfo:
        """Wait until the broker answers a metadata request."""
        assert self.proc is not None
        bootstrap, data = self._bootstrap, self._data
        wait_until(
            lambda: asyncio.run(_metadata_ready(bootstrap)),
            timeout_s=self.settings.service_start_timeout_s,
            what="Kafka broker",
            proc=self.proc,
            log_file=self.log_file,
            interval_s=0.5,
        )
        return ServiceInfo(
            name=self.name,
            pid=self.proc.pid,
            addresses={"bootstrap": bootstrap},
            data_dir=str(data),
            log_file=str(self.log_file),
        )

    def stop(self, pid: int | None = None) -> None:
        """SIGTERM: controlled shutdown, then SIGKILL if it lingers."""
        target = pid or (self.proc.pid if self.proc else None)
        if target:
            stop_process(target, sig=signal.SIGTERM, timeout_s=30)
        if self.proc is not None:
            self.proc.wait(timeout=5)


def node_properties(
    *,
    node: int,
    host: str,
    port: int,
    cport: int,
    voters: str,
    data: Path,
    replicas: int,
    session_timeout_ms: int | None = None,
) -> str:
    """``server.properties`` of one combined KRaft node (broker + controller).

    The single broker is node 1 of a one-voter quorum with ``replicas=1``; the cluster
    (``cluster.py``) writes three of these with ``replicas=3``. Why ``min.insync.replicas``
    is ``min(2, replicas)``: with ``acks=all`` an acknowledged record is then on two
    brokers wherever there are two, and a lone broker can still accept writes.
    """
    min_isr = min(2, replicas)
    session = (
        ""
        if session_timeout_ms is None
        else f"broker.session.timeout.ms={session_timeout_ms}\nbroker.heartbeat.interval.ms=1000\n"
    )
    return f"""\
process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}
advertised.listeners=PLAINTEXT://{host}:{port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions=1
default.replication.factor={replicas}
min.insync.replicas={min_isr}
unclean.leader.election.enable=false
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=1
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
{session}log.cleaner.dedupe.buffer.size=2097152
log.cleaner.threads=1
num.network.threads=2
num.io.threads=2
background.threads=2
num.replica.fetchers=1
num.recovery.threads.per.data.dir=1
"""


def is_ready(info: ServiceInfo) -> bool:
    """True when the broker answers a metadata request."""
    try:
        return asyncio.run(_metadata_ready(info.addresses["bootstrap"]))
    except Exception:
        return False
