"""One settings object for every process: addresses, ports, secrets and tuning knobs.

Every field is read from an environment variable with the ``SAGAFLOW_`` prefix
(``SAGAFLOW_POSTGRES_PORT`` for ``postgres_port``) or from a ``.env`` file. Nothing
here is instantiated at import time: each process builds its settings in its own
wiring code (``load_settings()``), so tests can build others.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SAGAFLOW_"
DEV_API_KEY = "dev-key-change-me"


class SettingsError(Exception):
    """Raised when the environment holds an invalid setting; the message names the variable."""


class Environment(StrEnum):
    """Where the process runs: development allows insecure defaults, production refuses them."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """All of sagaflow's settings. See the README's settings table for each variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_default=True
    )

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Field(default=Path(".sagaflow"), description="local services' data")
    host: str = Field(default="127.0.0.1", description="address local services bind to")

    # PostgreSQL: an external server by URL, or the embedded one on a port (0 = free port).
    database_url: str | None = Field(default=None, description="postgresql://... of a server")
    postgres_port: int = Field(default=0, ge=0, le=65535)
    postgres_user: str = "sagaflow"
    postgres_db: str = "sagaflow"
    db_pool_size: int = Field(default=10, ge=1, le=500)

    # Temporal: an external frontend address, or the dev server on ports (0 = free port).
    temporal_address: str | None = Field(default=None, description="host:port of a frontend")
    temporal_port: int = Field(default=0, ge=0, le=65535)
    temporal_ui_port: int = Field(default=0, ge=0, le=65535)
    temporal_namespace: str = "default"
    task_queue: str = "sagaflow-orders"

    # Kafka: an external bootstrap list, or the local KRaft broker (0 = free port).
    kafka_bootstrap: str | None = Field(default=None, description="host:port[,host:port]")
    kafka_enabled: bool = Field(default=True, description="false = embedded mode, no Kafka")
    kafka_port: int = Field(default=0, ge=0, le=65535)
    kafka_controller_port: int = Field(default=0, ge=0, le=65535)
    kafka_heap_mb: int = Field(default=512, ge=128, le=16384)
    kafka_jars_dir: Path | None = Field(default=None, description="folder of Kafka jars")
    java_bin: str = "java"
    maven_bin: str = "mvn"

    snapshot_every: int = Field(default=100, ge=0, description="events between snapshots")

    # --- saga settings (issue 4): add saga/worker/payment fields below this line ---

    # --- streaming settings (issue 5): add relay/projection/Kafka fields below this line ---

    service_start_timeout_s: float = Field(default=120.0, gt=0)

    api_keys: dict[str, str] = Field(
        default_factory=dict, description='JSON {"key": "read,write,admin"}'
    )
    dev_api_key: SecretStr = SecretStr(DEV_API_KEY)

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgresql+psycopg://")):
            raise ValueError("must start with postgresql:// (a PostgreSQL server URL)")
        return value

    @field_validator("temporal_address")
    @classmethod
    def _address_has_port(cls, value: str | None) -> str | None:
        if value is not None:
            _require_host_port(value)
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_ports(cls, value: str | None) -> str | None:
        if value is not None:
            for part in value.split(","):
                _require_host_port(part.strip())
        return value

    @model_validator(mode="after")
    def _no_insecure_defaults_outside_development(self) -> Settings:
        insecure = self.dev_api_key.get_secret_value() == DEV_API_KEY
        if self.environment is not Environment.DEVELOPMENT and insecure:
            raise ValueError(
                f"{ENV_PREFIX}DEV_API_KEY: the development default key is refused in "
                f"{self.environment.value}; set a secret key or configure {ENV_PREFIX}API_KEYS"
            )
        distinct = [
            p
            for p in (
                self.postgres_port,
                self.temporal_port,
                self.temporal_ui_port,
                self.kafka_port,
                self.kafka_controller_port,
            )
            if p
        ]
        if len(distinct) != len(set(distinct)):
            raise ValueError("the fixed service ports must differ from each other")
        return self

    @property
    def kafka_mode(self) -> bool:
        """True when projections are fed through Kafka, False in embedded mode."""
        return self.kafka_enabled


def _require_host_port(value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; raise SettingsError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """Render a pydantic error as one line per variable: ``SAGAFLOW_X: what is wrong``."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        message = err["msg"].removeprefix("Value error, ")
        if loc:
            name = ENV_PREFIX + loc[0].upper()
            given = err.get("input")
            shown = f" (got {given!r})" if isinstance(given, str | int | float) else ""
            lines.append(f"{name}: {message}{shown}")
        else:
            lines.append(message)
    return "invalid settings: " + "; ".join(lines)
