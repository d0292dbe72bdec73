"""Settings errors name the variable and what is wrong with it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sagaflow.settings import Environment, SettingsError, load_settings


def test_reads_variables_with_the_sagaflow_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAFLOW_POSTGRES_PORT", "6543")
    monkeypatch.setenv("SAGAFLOW_TASK_QUEUE", "orders-eu")
    settings = load_settings()
    assert settings.postgres_port == 6543
    assert settings.task_queue == "orders-eu"


def test_a_non_numeric_port_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAFLOW_KAFKA_PORT", "ninety")
    with pytest.raises(SettingsError, match=r"SAGAFLOW_KAFKA_PORT: .*integer.*'ninety'"):
        load_settings()


def test_a_port_out_of_range_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAFLOW_TEMPORAL_PORT", "70000")
    with pytest.raises(SettingsError, match="SAGAFLOW_TEMPORAL_PORT: .*65535"):
        load_settings()


def test_a_database_url_of_another_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAFLOW_DATABASE_URL", "mysql://x@y/z")
    with pytest.raises(SettingsError, match="SAGAFLOW_DATABASE_URL: must start with postgresql://"):
        load_settings()


def test_an_address_without_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092,broker2")
    with pytest.raises(SettingsError, match="SAGAFLOW_KAFKA_BOOTSTRAP: 'broker2' is not host:port"):
        load_settings()


def test_the_development_key_is_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAFLOW_ENVIRONMENT", "production")
    with pytest.raises(SettingsError, match="SAGAFLOW_DEV_API_KEY: the development default"):
        load_settings()
    monkeypatch.setenv("SAGAFLOW_DEV_API_KEY", "a-real-secret")
    assert load_settings().environment is Environment.PRODUCTION


def test_two_errors_are_both_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAFLOW_KAFKA_PORT", "x")
    monkeypatch.setenv("SAGAFLOW_POSTGRES_PORT", "-1")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "SAGAFLOW_KAFKA_PORT" in str(info.value)
    assert "SAGAFLOW_POSTGRES_PORT" in str(info.value)


def test_clashing_fixed_ports_are_refused() -> None:
    with pytest.raises(SettingsError, match="must differ"):
        load_settings(postgres_port=7000, temporal_port=7000)


def test_the_dev_server_runs_with_sagaflow_s_pragmas_and_poll_rate_unless_turned_off(
    tmp_path: Path,
) -> None:
    from sagaflow.services.temporal import TemporalService

    def argv(**overrides: str) -> list[str]:
        service = TemporalService(load_settings(data_dir=tmp_path, **overrides))
        service.prepare()
        return service._argv

    tuned = argv()
    pairs = list(itertools.pairwise(tuned))
    assert ("--sqlite-pragma", "journal_mode=wal") in pairs
    assert ("--sqlite-pragma", "synchronous=normal") in pairs
    assert ("--dynamic-config-value", "history.transferProcessorMaxPollRPS=100") in pairs
    untuned = argv(temporal_dev_sqlite_pragmas="", temporal_dev_dynamic_config=" , ")
    assert "--sqlite-pragma" not in untuned and "--dynamic-config-value" not in untuned


def test_a_relay_heartbeat_too_slow_for_its_lease_timeout_is_refused() -> None:
    with pytest.raises(SettingsError, match="SAGAFLOW_RELAY_LEASE_HEARTBEAT_S"):
        load_settings(relay_lease_heartbeat_s=3, relay_lease_timeout_s=5)


def test_the_local_kafka_is_one_broker_or_a_cluster_of_three(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAGAFLOW_KAFKA_BROKERS", "2")
    with pytest.raises(SettingsError, match=r"SAGAFLOW_KAFKA_BROKERS: must be 1 .* or 3 .*'2'"):
        load_settings()


def test_topics_get_one_replica_per_local_broker_and_a_majority_in_sync() -> None:
    single, cluster = load_settings(), load_settings(kafka_brokers=3)
    assert (single.topic_replication_factor, single.topic_min_insync_replicas) == (1, 1)
    assert (cluster.topic_replication_factor, cluster.topic_min_insync_replicas) == (3, 2)
    assert (single.kafka_broker_heap_mb, cluster.kafka_broker_heap_mb) == (512, 256)
    chosen = load_settings(kafka_brokers=3, kafka_replication_factor=2, kafka_heap_mb=200)
    assert (chosen.topic_replication_factor, chosen.topic_min_insync_replicas) == (2, 1)
    assert chosen.kafka_broker_heap_mb == 200


def test_more_in_sync_replicas_than_replicas_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAFLOW_KAFKA_BROKERS", "3")
    monkeypatch.setenv("SAGAFLOW_KAFKA_MIN_INSYNC_REPLICAS", "4")
    with pytest.raises(SettingsError, match="SAGAFLOW_KAFKA_MIN_INSYNC_REPLICAS: 4 is more than"):
        load_settings()
