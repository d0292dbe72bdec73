"""docker-compose.yml agrees with the settings object (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sagaflow.settings import ENV_PREFIX, Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
EXPECTED = {
    "postgres",
    "temporal",
    "temporal-ui",
    "kafka",
    "rabbitmq",
    "api",
    "worker",
    "relay",
    "projector",
}


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_every_service_is_there_with_a_health_check_or_dependency() -> None:
    services = load()["services"]
    assert set(services) == EXPECTED
    for name in ("postgres", "temporal", "kafka", "rabbitmq", "api"):
        assert "healthcheck" in services[name], name
    for name in ("api", "worker", "relay", "projector"):
        deps = services[name]["depends_on"]
        assert all(deps[d]["condition"] == "service_healthy" for d in deps), name


def test_every_sagaflow_variable_is_a_setting() -> None:
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "worker", "relay", "projector"):
        env = load()["services"][name]["environment"]
        unknown = {k for k in env if k.startswith(ENV_PREFIX)} - fields
        assert not unknown, f"{name}: {unknown}"
        assert env["SAGAFLOW_ENVIRONMENT"] == "production"


def test_addresses_and_ports_agree_between_services() -> None:
    services = load()["services"]
    env = services["api"]["environment"]
    assert env["SAGAFLOW_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["SAGAFLOW_DATABASE_URL"]
    assert env["SAGAFLOW_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["SAGAFLOW_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert (
        "PLAINTEXT://kafka:9092" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert services["kafka"]["image"].startswith("apache/kafka:3.9")
    assert "@rabbitmq:5672/" in env["SAGAFLOW_RABBITMQ_URL"]
    assert "rabbitmq_consistent_hash_exchange" in " ".join(services["rabbitmq"]["command"])
    assert services["temporal"]["environment"]["POSTGRES_SEEDS"] == "postgres"
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"
    command = services["api"]["command"]
    port = command[command.index("--port") + 1]
    assert f"{port}:{port}" in services["api"]["ports"]
    # The Web UI's codec calls go to the API as published, and the API lets its origin in.
    ui_port = services["temporal-ui"]["ports"][0].split(":")[0]
    codec = services["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"]
    assert codec == f"http://localhost:{port}/codec"
    assert env["SAGAFLOW_CODEC_CORS_ORIGINS"] == f"http://localhost:{ui_port}"
    # Relays run as a pair: one holds the lease, the other stands by.
    assert services["relay"]["deploy"]["replicas"] >= 2
    # Settings parse the compose environment (with a real secret for the key).
    values = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items()}
    values.update(dev_api_key="a-real-secret-key", api_keys={}, transport="rabbitmq")
    values.update(codec_keys="", codec_key_id="")  # their defaults when unset
    Settings(**values)


def test_compose_commands_are_cli_commands() -> None:
    from sagaflow.cli import app

    names = {c.name for c in app.registered_commands}
    for name in ("api", "worker", "relay", "projector"):
        assert load()["services"][name]["command"][1] in names
