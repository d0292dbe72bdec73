"""Three Kafka 3.9 nodes on one machine: a KRaft cluster for replication and broker faults.

``SAGAFLOW_KAFKA_BROKERS=3`` selects it. Each node is a combined broker + controller
(``process.roles=broker,controller``) and the three form a static 3-voter quorum.

Why combined nodes, not a controller quorum plus brokers: on two cores every JVM
brings its own GC and JIT threads and about 300 MB resident; combined mode needs
three JVMs where a separate quorum needs six (or four with a single controller,
which would make the one process no broker kill ever exercises a single point of
failure). Killing a node then takes a broker *and* a voter: two voters of three
keep the quorum, and when the killed node was the active controller the others
elect a new one within about a second, which is the harder fault, so it is tested.

Durability: topics get replication factor 3 and ``min.insync.replicas=2`` (cluster
defaults here, and set explicitly by ``streaming.kafka.ensure_topic``), unclean leader
election stays off, and every sagaflow producer uses ``acks=all``: an acknowledged
record is on at least two brokers, and only an in-sync replica can become leader.

Layout under ``<data_dir>/kafka-cluster``: ``cluster.id``, ``ports.json`` (each node's
broker and controller ports, chosen free once and kept: the voters list names the
controller ports, so a restarted node must come back on its own), ``nodes.json``
(each node's pid) and ``node-<id>/`` with its properties, log folder and log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

from sagaflow.services.base import (
    ServiceError,
    ServiceInfo,
    ensure_port_free,
    free_port,
    spawn,
    stop_process,
    tail,
)
from sagaflow.services.kafka import (
    LOG4J_PROPERTIES,
    format_storage,
    install_jars,
    jvm_command,
    new_cluster_id,
    node_properties,
    require_java,
)
from sagaflow.settings import Settings

NODE_IDS = (1, 2, 3)
#: a one-partition topic the readiness check creates: replicated to all three nodes,
#: it proves the brokers replicate, not only that they answer
READY_TOPIC = "sagaflow.cluster-ready"
#: Why SerialGC and a 256 MB heap (SAGAFLOW_KAFKA_HEAP_MB): three brokers share two
#: cores; G1 runs concurrent and parallel GC threads per JVM, the serial collector one,
#: and a young collection of a heap this small takes milliseconds.
CLUSTER_JVM_FLAGS = ("-XX:+UseSerialGC",)
#: how long a broker may miss heartbeats before the controller fences it and moves its
#: partitions' leadership (Kafka's default is 9 s); also the bound on how long a killed
#: leader's partitions stay unwritable
SESSION_TIMEOUT_MS = 6000


@dataclass(frozen=True)
class PartitionState:
    """One partition as the cluster's metadata shows it."""

    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


async def describe_partitions(bootstrap: str, topic: str) -> dict[int, PartitionState]:
    """Leader, replicas and in-sync replicas of each partition of ``topic`` ({} if absent)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        for attempt in range(10):
            try:
                described = await admin.describe_topics([topic])
                break
            except KafkaError:
                # Why retry: the client asks a random broker of its metadata, which
                # names a killed broker until the controller fences it.
                if attempt == 9:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    return {
        p["partition"]: PartitionState(
            p["partition"], p["leader"], tuple(p["replicas"]), tuple(p["isr"])
        )
        for d in described
        if d.get("error_code") == 0
        for p in d["partitions"]
    }


async def busiest_partition(bootstrap: str, topic: str, window_s: float = 1.0) -> int | None:
    """The partition of ``topic`` whose log grew most over ``window_s`` (ties: the
    longest log); None when the topic has no partitions."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    partitions = await describe_partitions(bootstrap, topic)
    if not partitions:
        return None
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        before = await consumer.end_offsets(tps)
        await asyncio.sleep(window_s)
        after = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return max(tps, key=lambda tp: (after[tp] - before[tp], after[tp])).partition


class KafkaCluster:
    """Three combined KRaft nodes under ``<data_dir>/kafka-cluster``; one service named
    ``kafka`` to the supervisor, with per-node kill and restart for fault injection."""

    name = "kafka"

    def __init__(self, settings: Settings, *, detached: bool = False) -> None:
        self.settings = settings
        self.detached = detached
        self.root = settings.data_dir.resolve() / "kafka-cluster"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._ports_of: dict[int, tuple[int, int]] = {}

    # --- paths and ports -----------------------------------------------------------------

    def node_dir(self, node: int) -> Path:
        """The folder of one node (properties, log folder, log file)."""
        return self.root / f"node-{node}"

    def log_file(self, node: int) -> Path:
        """One node's log file."""
        return self.node_dir(node) / "kafka.log"

    def address(self, node: int) -> str:
        """host:port of one node's broker listener."""
        return f"{self.settings.host}:{self._ports()[node][0]}"

    @property
    def bootstrap(self) -> str:
        """All three brokers, so a client starts with any one of them down."""
        return ",".join(self.address(n) for n in NODE_IDS)

    def _ports(self) -> dict[int, tuple[int, int]]:
        """Each node's (broker, controller) port: kept in ports.json once chosen."""
        if self._ports_of:
            return self._ports_of
        state = self.root / "ports.json"
        kept = (
            {int(k): (v[0], v[1]) for k, v in json.loads(state.read_text()).items()}
            if (state.exists())
            else {}
        )
        s = self.settings
        chosen: dict[int, tuple[int, int]] = {}
        used: set[int] = set()
        for node in NODE_IDS:
            pair = []
            for index, fixed in enumerate((s.kafka_port, s.kafka_controller_port)):
                # A fixed port is node 1's; nodes 2 and 3 take the next two.
                port = fixed + node - 1 if fixed else kept.get(node, (0, 0))[index]
                while not port or port in used:
                    port = free_port(s.host)
                used.add(port)
                pair.append(port)
            chosen[node] = (pair[0], pair[1])
        self.root.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({str(n): list(p) for n, p in chosen.items()}))
        self._ports_of = chosen
        return chosen

    def _check_ports_free(self, node: int) -> None:
        s = self.settings
        for index, port in enumerate(self._ports()[node]):
            fixed = (s.kafka_port, s.kafka_controller_port)[index]
            setting = ("SAGAFLOW_KAFKA_PORT", "SAGAFLOW_KAFKA_CONTROLLER_PORT")[index]
            if fixed:
                ensure_port_free(s.host, port, f"{setting} + {node - 1}")
                continue
            try:
                ensure_port_free(s.host, port, setting)
            except ServiceError:
                raise ServiceError(
                    f"port {port} of Kafka node {node} is in use; the cluster keeps its "
                    f"ports ({self.root / 'ports.json'}) because its voters list names "
                    f"them: stop what uses it, or delete {self.root} for a new cluster"
                ) from None

    # --- start ---------------------------------------------------------------------------

    def start(self) -> ServiceInfo:
        """Prepare, launch and wait: the whole start from the calling thread."""
        self.prepare()
        self.launch()
        return self.wait_ready()

    def _argv(self, node: int) -> list[str]:
        java = require_java(self.settings)
        libs = install_jars(self.settings)
        jvm = jvm_command(
            java, libs, self.node_dir(node), self.settings.kafka_broker_heap_mb, *CLUSTER_JVM_FLAGS
        )
        return [*jvm, "kafka.Kafka", str(self.node_dir(node) / "server.properties")]

    def prepare(self) -> None:
        """Fetch jars if missing, choose ports, write each node's properties, format once."""
        java = require_java(self.settings)
        libs = install_jars(self.settings)
        ports = self._ports()
        for node in NODE_IDS:
            self._check_ports_free(node)
        cid_file = self.root / "cluster.id"
        if not cid_file.exists():
            cid_file.write_text(new_cluster_id())
        cluster_id = cid_file.read_text().strip()
        host = self.settings.host
        voters = ",".join(f"{n}@{host}:{ports[n][1]}" for n in NODE_IDS)
        todo = []
        for node in NODE_IDS:
            folder = self.node_dir(node)
            folder.mkdir(parents=True, exist_ok=True)
            props = folder / "server.properties"
            port, cport = ports[node]
            props.write_text(
                node_properties(
                    node=node,
                    host=host,
                    port=port,
                    cport=cport,
                    voters=voters,
                    data=folder / "data",
                    replicas=len(NODE_IDS),
                    session_timeout_ms=SESSION_TIMEOUT_MS,
                )
            )
            (folder / "log4j.properties").write_text(LOG4J_PROPERTIES)
            if not (folder / "data" / "meta.properties").exists():
                jvm = jvm_command(java, libs, folder, 128, "-XX:+UseSerialGC")
                todo.append((jvm, props))
        # Formatting starts a JVM per node: in parallel, it costs one start-up, not three.
        with ThreadPoolExecutor(max_workers=len(NODE_IDS)) as pool:
            for done in [pool.submit(format_storage, jvm, cluster_id, p) for jvm, p in todo]:
                done.result()

    def launch(self) -> None:
        """Start the three nodes (from the thread that owns the children)."""
        for node in NODE_IDS:
            self._spawn(node)

    def _spawn(self, node: int) -> None:
        self.procs[node] = spawn(
            self._argv(node), log_file=self.log_file(node), detached=self.detached
        )
        self._write_pids()

    def _write_pids(self) -> None:
        pids = {str(n): p.pid for n, p in self.procs.items() if p.poll() is None}
        (self.root / "nodes.json").write_text(json.dumps(pids))

    def wait_ready(self) -> ServiceInfo:
        """Wait until all three brokers are registered and a replicated topic has every
        node in its in-sync replicas."""
        self._wait(self._cluster_ready, what="Kafka cluster")
        first = self.procs[NODE_IDS[0]]
        addresses = {"bootstrap": self.bootstrap}
        addresses |= {f"broker.{n}": self.address(n) for n in NODE_IDS}
        return ServiceInfo(
            name=self.name,
            pid=first.pid,
            addresses=addresses,
            data_dir=str(self.root),
            log_file=str(self.log_file(NODE_IDS[0])),
        )

    def _wait(self, probe: Callable[[], Awaitable[bool]], *, what: str) -> None:
        """Poll ``probe`` until it holds; fail at once when a node exits meanwhile."""
        deadline = time.monotonic() + self.settings.service_start_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            for node, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ServiceError(
                        f"Kafka node {node} exited with code {proc.returncode} while "
                        f"starting; last log lines:\n{tail(self.log_file(node))}"
                    )
            try:
                if asyncio.run(_quietly(probe)):
                    return
            except Exception as exc:  # probes fail until the nodes are up
                last_error = exc
            time.sleep(0.5)
        raise ServiceError(
            f"{what} was not ready after {self.settings.service_start_timeout_s:.0f}s"
            + (f" (last error: {last_error})" if last_error else "")
            + f"; last log lines of node 1:\n{tail(self.log_file(NODE_IDS[0]))}"
        )

    async def _cluster_ready(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
            # Metadata lists registered, unfenced brokers only.
            if {b["node_id"] for b in cluster["brokers"]} != set(NODE_IDS):
                return False
            described = await admin.describe_topics([READY_TOPIC])
            if not any(d.get("error_code") == 0 for d in described):
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [NewTopic(READY_TOPIC, 1, len(NODE_IDS), {"min.insync.replicas": "2"})]
                    )
                return False
        finally:
            await admin.close()
        state = await describe_partitions(self.bootstrap, READY_TOPIC)
        return bool(state) and all(
            p.leader in NODE_IDS and set(p.isr) == set(NODE_IDS) for p in state.values()
        )

    # --- one node: fault injection -------------------------------------------------------

    def node_pids(self) -> dict[int, int]:
        """The pid of each running node (from this object's children, else nodes.json)."""
        pids = {n: p.pid for n, p in self.procs.items() if p.poll() is None}
        state = self.root / "nodes.json"
        if not pids and state.exists():
            pids = {int(n): pid for n, pid in json.loads(state.read_text()).items()}
        return {n: pid for n, pid in pids.items() if self._is_node(pid, n)}

    def _is_node(self, pid: int, node: int) -> bool:
        # Why check the command line: a recorded pid of a node that died may since
        # belong to another process, which must not be signalled.
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:
            return False
        return str(self.node_dir(node) / "server.properties") in cmdline

    def kill_node(self, node: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one node (kill -9 by default) and wait until it is gone."""
        pid = self.node_pids().get(node)
        if pid is None:
            raise ServiceError(f"Kafka node {node} is not running")
        os.kill(pid, sig)
        proc = self.procs.get(node)
        if proc is not None:
            proc.wait(timeout=60)
        else:
            psutil.wait_procs([psutil.Process(pid)], timeout=60)
        self._write_pids()

    def start_node(self, node: int) -> int:
        """Start one stopped node again (same ports, same data); its pid.

        Call from the thread that owns the children (its parent-death signal fires
        when that thread ends); then ``wait_node_in_sync``."""
        if node in self.node_pids():
            raise ServiceError(f"Kafka node {node} already runs")
        self._check_ports_free(node)
        self._spawn(node)
        return self.procs[node].pid

    def wait_node_in_sync(self, node: int, topics: list[str]) -> None:
        """Wait until ``node`` is registered again and back in the in-sync replicas of
        every partition of ``topics`` it replicates (it has caught up)."""

        async def in_sync() -> bool:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
            await admin.start()
            try:
                brokers = {b["node_id"] for b in (await admin.describe_cluster())["brokers"]}
            finally:
                await admin.close()
            if node not in brokers:
                return False
            for topic in topics:
                for p in (await describe_partitions(self.bootstrap, topic)).values():
                    if node in p.replicas and node not in p.isr:
                        return False
            return True

        self._wait(in_sync, what=f"Kafka node {node}")

    # --- stop ----------------------------------------------------------------------------

    def stop(self, pid: int | None = None) -> None:
        """SIGTERM every node at once (controlled shutdown), SIGKILL what lingers.

        ``pid`` (the supervisor's record) is stopped too when it is one of ours."""
        pids = set(self.node_pids().values())
        if pid and any(self._is_node(pid, n) for n in NODE_IDS):
            pids.add(pid)
        # Why all at once: one at a time, the last node waits for a controller quorum
        # that left before it, until the timeout.
        with ThreadPoolExecutor(max_workers=max(1, len(pids))) as pool:
            list(pool.map(lambda p: stop_process(p, sig=signal.SIGTERM, timeout_s=30), pids))
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.root / "nodes.json").unlink()


async def _quietly(probe: Callable[[], Awaitable[bool]]) -> bool:
    # Why: while a node boots, every failed probe would log a connection error.
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return await probe()
    finally:
        logger.setLevel(level)


def is_cluster(info: ServiceInfo) -> bool:
    """True when a recorded ``kafka`` service is a cluster (it lists its brokers)."""
    return any(key.startswith("broker.") for key in info.addresses)
