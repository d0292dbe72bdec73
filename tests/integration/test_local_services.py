"""The supervisor's services are real: a round trip on each, crash detection, restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

from sagaflow.services import LocalServices, ServiceError
from sagaflow.services.base import process_alive
from sagaflow.settings import Settings, load_settings

pytestmark = pytest.mark.integration


@activity.defn
async def shout(text: str) -> str:
    """A trivial activity for the round trip."""
    return text.upper()


@workflow.defn(sandboxed=False)
class ShoutWorkflow:
    """Calls one activity and returns its result."""

    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=10)
        )


async def _shout_through_temporal(address: str, text: str) -> str:
    client = await Client.connect(address)
    queue = f"probe-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[ShoutWorkflow], activities=[shout]):
        return await client.execute_workflow(
            ShoutWorkflow.run, text, id=f"shout-{uuid.uuid4().hex[:8]}", task_queue=queue
        )


def test_postgres_answers_a_query(settings: Settings) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT current_database(), current_user, 6 * 7").fetchone()
    assert row == ("sagaflow", "sagaflow", 42)


async def test_a_workflow_runs_its_activity_on_the_dev_server(settings: Settings) -> None:
    assert settings.temporal_address
    assert await _shout_through_temporal(settings.temporal_address, "saga") == "SAGA"


async def test_kafka_round_trip_with_idempotent_producer_and_group(kafka_bootstrap: str) -> None:
    topic = f"probe-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, f"m{i}".encode(), key=b"k") for i in range(5)]
    finally:
        await producer.stop()
    assert [meta.offset for meta in sent] == [0, 1, 2, 3, 4]
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        got: list[bytes] = []
        async with asyncio.timeout(30):
            while len(got) < 5:
                batch = await consumer.getmany(timeout_ms=1000)
                got += [msg.value for msgs in batch.values() for msg in msgs if msg.value]
        await consumer.commit()
    finally:
        await consumer.stop()
    assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]


@pytest.fixture
def own_services(tmp_path: Path) -> Iterator[LocalServices]:
    """A second, private set of services this test may kill and restart."""
    services = LocalServices(load_settings(data_dir=tmp_path / "own"))
    try:
        services.start()
        yield services
    finally:
        services.stop()
    for info in services.read_state().values():
        assert not process_alive(info.pid)


def test_killed_services_are_reported_down_and_restarts_keep_data(
    own_services: LocalServices,
) -> None:
    pg_url = own_services.running["postgres"].addresses["url"]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v text)")
        conn.execute("INSERT INTO kept VALUES ('survives')")
    temporal_address = own_services.running["temporal"].addresses["address"]
    assert asyncio.run(_shout_through_temporal(temporal_address, "before")) == "BEFORE"

    for name in ("postgres", "temporal", "kafka"):
        os.kill(own_services.running[name].pid, signal.SIGKILL)
    # The kernel delivers SIGKILL asynchronously: give it a bounded moment.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        alive for _, alive, _ in own_services.status().values()
    ):
        time.sleep(0.1)
    for name, (_, alive, ready) in own_services.status().items():
        assert not alive, f"{name} is still reported up after SIGKILL"
        assert not ready, name

    pg = own_services.start_one("postgres")
    with psycopg.connect(pg.addresses["url"]) as conn:
        assert conn.execute("SELECT v FROM kept").fetchall() == [("survives",)]

    temporal_info = own_services.start_one("temporal")

    async def finished_workflows() -> int:
        client = await Client.connect(temporal_info.addresses["address"])
        return len([wf async for wf in client.list_workflows("WorkflowType = 'ShoutWorkflow'")])

    assert asyncio.run(finished_workflows()) == 1
    kafka_info = own_services.start_one("kafka")
    assert own_services.status()["kafka"][2], kafka_info


def test_a_taken_port_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        services = LocalServices(load_settings(data_dir=tmp_path, postgres_port=port))
        with pytest.raises(ServiceError, match=f"port {port} .*SAGAFLOW_POSTGRES_PORT"):
            services.start(["postgres"])
    assert services.read_state() == {}


def test_a_missing_java_is_one_clear_message(tmp_path: Path) -> None:
    services = LocalServices(load_settings(data_dir=tmp_path, java_bin="no-such-java"))
    with pytest.raises(ServiceError, match="'no-such-java' not found .*SAGAFLOW_JAVA_BIN"):
        services.start(["kafka"])


def test_a_data_folder_from_another_postgres_version_is_refused(tmp_path: Path) -> None:
    pgdata = tmp_path / "postgres" / "data"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("9\n")
    services = LocalServices(load_settings(data_dir=tmp_path))
    with pytest.raises(ServiceError, match="made by PostgreSQL 9"):
        services.start(["postgres"])
