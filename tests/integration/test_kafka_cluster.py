"""The three-broker KRaft cluster (SAGAFLOW_KAFKA_BROKERS=3): start and stop, replicated
topics, the pipeline through it, and kill -9 of a busy partition's leader under load."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import InvalidReplicationFactorError

from bench.workload import background, register_products, run_order, wait_for
from eventstore.envelope import START, FeedCursor
from eventstore.postgres import PostgresEventStore
from projections.handlers import default_projections
from projections.runner import run_projector
from projections.verify import verify_against_rebuild
from sagaflow.services import LocalServices
from sagaflow.services.base import process_alive
from sagaflow.services.kafka.cluster import (
    NODE_IDS,
    SESSION_TIMEOUT_MS,
    KafkaCluster,
    PartitionState,
    busiest_partition,
    describe_partitions,
)
from sagaflow.settings import Settings, load_settings
from streaming.kafka import admin_client, ensure_topic, read_topic
from streaming.relay import load_checkpoint, run_relay
from tests.integration.streaming_support import (
    SKUS,
    OrderWriter,
    assert_stream_order,
    caught_up,
    settings_for_test,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _cluster_settings(data_dir: Path) -> Settings:
    return load_settings(data_dir=data_dir, kafka_brokers=3)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[KafkaCluster]:
    """A three-node cluster of this module's own (the session's broker stays single)."""
    services = LocalServices(_cluster_settings(tmp_path_factory.mktemp("kafka-cluster")))
    with services.running_services(["kafka"]):
        yield services.service("kafka")


@pytest.fixture
def cluster_settings(
    cluster: KafkaCluster, settings: Settings, database_url: str, unique: str
) -> Settings:
    """The test's own database, topic and group, on the cluster."""
    return settings_for_test(settings, database_url, unique).model_copy(
        update={
            "kafka_bootstrap": cluster.bootstrap,
            "kafka_brokers": 3,
            "relay_backoff_max_s": 1.0,
            "projector_backoff_max_s": 1.0,
        }
    )


def test_three_brokers_start_and_a_supervisor_without_the_setting_stops_all_of_them(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    data = tmp_path / "own"
    services = LocalServices(_cluster_settings(data))
    try:
        info = services.start(["kafka"])["kafka"]
        cluster = services.service("kafka")
        pids = cluster.node_pids()
        assert sorted(pids) == list(NODE_IDS) and all(map(process_alive, pids.values()))
        assert info.addresses["bootstrap"].count(",") == 2, "the bootstrap lists all three"
        described = asyncio.run(_brokers(info.addresses["bootstrap"]))
        assert described == set(NODE_IDS)
    finally:
        # 'services down' from a shell without SAGAFLOW_KAFKA_BROKERS=3: the state file
        # says it is a cluster, so every node stops, not only the recorded pid.
        LocalServices(load_settings(data_dir=data)).stop()
    assert not any(map(process_alive, pids.values())), "a node outlived the stop"
    assert not (data / "kafka-cluster" / "nodes.json").exists()
    assert services.read_state() == {}


async def _brokers(bootstrap: str) -> set[int]:
    admin = admin_client(load_settings(kafka_bootstrap=bootstrap))
    await admin.start()
    try:
        return {b["node_id"] for b in (await admin.describe_cluster())["brokers"]}
    finally:
        await admin.close()


async def test_a_topic_is_created_with_three_in_sync_replicas_and_min_insync_two(
    cluster_settings: Settings,
) -> None:
    s = cluster_settings
    await ensure_topic(s, s.kafka_topic)
    bootstrap = s.kafka_bootstrap or ""

    partitions: dict[int, PartitionState] = {}

    async def known() -> bool:
        # a broker whose metadata lags the controller's answers "unknown topic" at first
        partitions.clear()
        partitions.update(await describe_partitions(bootstrap, s.kafka_topic))
        return len(partitions) == s.kafka_partitions

    await wait_for(known, what="the topic in a broker's metadata", timeout_s=10)
    for p in partitions.values():
        assert sorted(p.replicas) == list(NODE_IDS)
        assert sorted(p.isr) == list(NODE_IDS), "ensure_topic returns once all are in sync"
    # leadership is spread over the brokers, not all on one
    assert len({p.leader for p in partitions.values()}) > 1
    entries: dict[str, str] = {}

    async def configs_known() -> bool:
        admin = admin_client(s)
        await admin.start()
        try:
            resource = ConfigResource(ConfigResourceType.TOPIC, s.kafka_topic)
            answers = await admin.describe_configs([resource])
        finally:
            await admin.close()
        entries.update({e[0]: e[1] for a in answers for r in a.resources for e in r[4]})
        return "min.insync.replicas" in entries

    await wait_for(configs_known, what="the topic's configs", timeout_s=10)
    assert entries["min.insync.replicas"] == "2"


async def test_relay_and_projector_run_through_the_cluster(
    cluster_settings: Settings, pg_store: PostgresEventStore
) -> None:
    s = cluster_settings
    await register_products(pg_store, SKUS)
    for i in range(30):
        await run_order(pg_store, f"c-{i}", SKUS, random.Random(i))
    async with (
        background(lambda stop: run_relay(s, stop)),
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        await wait_for(lambda: caught_up(pg_store, s), what="catch-up", watch=projector)
    feed = await pg_store.read_feed(limit=100_000)
    on_topic = [dict(r.headers)["event_id"].decode() for r in await read_topic(s, s.kafka_topic)]
    assert sorted(on_topic) == sorted(str(e.event_id) for e in feed)
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt


async def test_kill_9_of_the_busiest_partition_leader_under_load_loses_no_acknowledged_event(
    cluster: KafkaCluster, cluster_settings: Settings, pg_store: PostgresEventStore
) -> None:
    s = cluster_settings
    await register_products(pg_store, SKUS)
    async with (
        background(lambda stop: run_relay(s, stop)) as relay,
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        writer = OrderWriter(pg_store, "l", pause_s=0.01)
        try:
            await wait_for(lambda: _relayed_some(pg_store, s), what="first publish", watch=relay)
            partition, leader = await _busiest_partition_and_leader(s)
            cluster.kill_node(leader)
            # The controller fences the dead broker after its session timeout (and a
            # controller election first when it was the active controller).
            await wait_for(
                lambda: _led_by_another(s, partition, leader),
                what="a new leader",
                timeout_s=SESSION_TIMEOUT_MS / 1000 + 30,
            )
            moved_at = await load_checkpoint(pg_store.pool, s.relay_name)
            await wait_for(
                lambda: _checkpoint_past(pg_store, s, moved_at),
                what="publishing with one broker down",
                watch=relay,
            )
            cluster.start_node(leader)  # from this (the main) thread: see start_node
            await asyncio.to_thread(cluster.wait_node_in_sync, leader, [s.kafka_topic])
        finally:
            written = await writer.stop()
        assert written > 20
        await wait_for(
            lambda: caught_up(pg_store, s), what="catch-up", watch=projector, timeout_s=120
        )
        assert not relay.done()

    checkpoint = await load_checkpoint(pg_store.pool, s.relay_name)
    acknowledged = [e for e in await pg_store.read_feed(limit=1_000_000) if e.cursor <= checkpoint]
    published = [dict(r.headers) for r in await read_topic(s, s.kafka_topic)]
    on_topic = {h["event_id"].decode() for h in published}
    missing = [e.event_id for e in acknowledged if str(e.event_id) not in on_topic]
    assert missing == [], "an event the relay checkpointed is not on the topic"
    assert_stream_order((h["stream_id"].decode(), int(h["version"])) for h in published)
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt, "the projector applied every event"


async def _relayed_some(store: PostgresEventStore, s: Settings) -> bool:
    return await load_checkpoint(store.pool, s.relay_name) != START


async def _led_by_another(s: Settings, partition: int, dead: int) -> bool:
    state = (await describe_partitions(s.kafka_bootstrap or "", s.kafka_topic))[partition]
    return state.leader not in (dead, -1) and dead not in state.isr


async def _checkpoint_past(store: PostgresEventStore, s: Settings, cursor: FeedCursor) -> bool:
    return await load_checkpoint(store.pool, s.relay_name) > cursor


async def _busiest_partition_and_leader(s: Settings) -> tuple[int, int]:
    """The partition that grew most over one second, and its leader's node id."""
    assert s.kafka_bootstrap
    busiest = await busiest_partition(s.kafka_bootstrap, s.kafka_topic)
    assert busiest is not None
    state = await describe_partitions(s.kafka_bootstrap, s.kafka_topic)
    return busiest, state[busiest].leader


async def test_a_topic_wanting_more_replicas_than_brokers_is_refused_naming_the_settings(
    settings: Settings, kafka_bootstrap: str, unique: str
) -> None:
    one_broker = settings.model_copy(update={"kafka_replication_factor": 3})
    with pytest.raises(InvalidReplicationFactorError, match="SAGAFLOW_KAFKA_BROKERS"):
        await ensure_topic(one_broker, f"refused-{unique}")


async def test_a_projector_that_creates_the_topic_keeps_following_it(
    cluster_settings: Settings, pg_store: PostgresEventStore
) -> None:
    # Without the projector's guard, a CancelledError that escapes the Kafka client
    # right after it created the replicated topic ended run_projector quietly (a
    # projector process exiting 0 and following nothing; 2 of 5 reliability runs).
    s = cluster_settings
    await register_products(pg_store, SKUS)
    for i in range(10):
        await run_order(pg_store, f"p-{i}", SKUS, random.Random(i))
    async with background(lambda stop: run_projector(s, stop)) as projector:
        await asyncio.sleep(8)  # alone: it creates the topic and joins the group
        assert not projector.done(), "the projector stopped by itself"
        async with background(lambda stop: run_relay(s, stop)):
            await wait_for(lambda: caught_up(pg_store, s), what="catch-up", watch=projector)
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt
