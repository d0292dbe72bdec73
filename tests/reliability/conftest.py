"""One dedicated stack for the reliability scenarios (fixed PostgreSQL and Temporal
ports, so restart scenarios keep addresses); stopped by process id at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.reliability.harness import (
    Harness,
    cluster_stack_for_reliability,
    stack_for_reliability,
    started,
)
from tests.service_dirs import service_data_dir


@pytest.fixture(scope="session")
def harness() -> Iterator[Harness]:
    """The started stack shared by every scenario (each uses its own SKUs and customers)."""
    with service_data_dir("reliability") as data_dir:
        stack = stack_for_reliability(data_dir)
        with started(stack) as h:
            yield h


@pytest.fixture(scope="session")
def rabbit_harness() -> Iterator[Harness]:
    """A second stack, on RabbitMQ, for the scenarios run on both transports."""
    with service_data_dir("reliability-rmq") as data_dir:
        stack = stack_for_reliability(data_dir, transport="rabbitmq")
        with started(stack) as h:
            yield h


@pytest.fixture(autouse=True)
def restart_crashed_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each scenario, start again any sagaflow process that died, so one
    scenario's crash (reported by its own test) does not fail the next ones."""
    yield
    for fixture in ("harness", "rabbit_harness", "cluster_harness"):
        if fixture not in request.fixturenames:
            continue
        h: Harness = request.getfixturevalue(fixture)
        for name in list(h.stack.procs):
            if name in ("worker", "relay", "projector", "api") and not h.process_alive(name):
                h.stack.start_process(name)


@pytest.fixture(scope="session")
def cluster_harness() -> Iterator[Harness]:
    """A third stack, on a three-broker Kafka cluster, for kafka_leader_kill."""
    with service_data_dir("reliability-cluster") as data_dir:
        stack = cluster_stack_for_reliability(data_dir)
        with started(stack) as h:
            yield h
