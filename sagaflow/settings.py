"""One settings object for every process: addresses, ports, secrets and tuning knobs.

Every field is read from an environment variable with the ``SAGAFLOW_`` prefix
(``SAGAFLOW_POSTGRES_PORT`` for ``postgres_port``) or from a ``.env`` file. Nothing
here is instantiated at import time: each process builds its settings in its own
wiring code (``load_settings()``), so tests can build others.
"""

from __future__ import annotations

import logging
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


#: the deprecation line for SAGAFLOW_KAFKA_ENABLED=false is said once per process
_DEPRECATION_SAID: list[bool] = []


class Transport(StrEnum):
    """How events travel from the relay to the projections (SAGAFLOW_TRANSPORT)."""

    KAFKA = "kafka"
    RABBITMQ = "rabbitmq"
    EMBEDDED = "embedded"


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
    temporal_ui_url: str | None = Field(
        default=None, description="the Temporal Web UI (console links); unset = the dev server's"
    )
    # Why these defaults for the local dev server (issue 14): SQLite in WAL mode with
    # synchronous=normal commits without an fsync per transaction (durable across a
    # process crash; a power cut can lose the last commits, never corrupt the file),
    # and the transfer queue polled up to 100/s instead of 20/s (the floor of a
    # workflow task's dispatch latency). Both are for the bundled dev server only;
    # "" turns each off.
    temporal_dev_sqlite_pragmas: str = Field(
        default="journal_mode=wal,synchronous=normal",
        description="dev server --sqlite-pragma values, comma-separated",
    )
    temporal_dev_dynamic_config: str = Field(
        default="history.transferProcessorMaxPollRPS=100",
        description="dev server --dynamic-config-value KEY=VALUE items, comma-separated",
    )
    task_queue: str = "sagaflow-orders"

    # Kafka: an external bootstrap list, or the local KRaft broker (0 = free port).
    kafka_bootstrap: str | None = Field(default=None, description="host:port[,host:port]")
    kafka_enabled: bool = Field(
        default=True, description="deprecated: false = SAGAFLOW_TRANSPORT=embedded"
    )
    kafka_port: int = Field(default=0, ge=0, le=65535)
    kafka_controller_port: int = Field(default=0, ge=0, le=65535)
    #: 1 = one KRaft node; 3 = a cluster of three combined broker+controller nodes
    #: (a 3-voter quorum), its topics replicated three times with min.insync.replicas=2
    kafka_brokers: int = Field(default=1, description="the local Kafka: 1 broker or 3 (cluster)")
    kafka_heap_mb: int | None = Field(
        default=None, ge=128, le=16384, description="per local broker; unset: 512, or 256 each of 3"
    )
    kafka_jars_dir: Path | None = Field(default=None, description="folder of Kafka jars")
    java_bin: str = "java"
    maven_bin: str = "mvn"

    snapshot_every: int = Field(default=20, ge=0, description="events between snapshots")

    # --- saga settings (issue 4): add saga/worker/payment fields below this line ---
    # Order saga: deadlines, order limits, per-step retry knobs (passed to the workflow
    # in its input, because workflow code must not read the environment).
    saga_ship_deadline_s: float = Field(default=7 * 86400, gt=0, description="ship by, else cancel")
    saga_delivery_timeout_s: float = Field(default=60 * 86400, gt=0)
    order_max_lines: int = Field(default=50, ge=1, le=1000)
    # Returns saga (passed in its input, like the order saga's knobs).
    returns_receive_deadline_s: float = Field(
        default=14 * 86400, gt=0, description="goods must arrive by, else the return expires"
    )
    returns_refund_retry_max_attempts: int = Field(
        default=5, ge=1, description="refund attempts before the return compensates"
    )
    order_max_units: int = Field(default=1000, ge=1)
    saga_local_activities: bool = Field(
        default=True, description="event-store steps as local activities (see worker.py)"
    )
    saga_local_notifications: bool = Field(
        default=False,
        description="the order confirmation as a local activity: one workflow task and "
        "one activity fewer per order; a slow notifier then holds the task",
    )
    activity_start_to_close_s: float = Field(default=10.0, gt=0)
    activity_retry_initial_s: float = Field(default=0.5, gt=0)
    activity_retry_backoff: float = Field(default=2.0, ge=1.0)
    activity_retry_max_interval_s: float = Field(default=30.0, gt=0)
    activity_retry_max_attempts: int = Field(default=8, ge=1)
    compensation_retry_max_attempts: int = Field(default=5, ge=1)
    notification_retry_max_attempts: int = Field(default=10, ge=1)
    # Saga engine (every saga type): frozen into each new saga's memo at start.
    saga_search_attributes: bool = Field(
        default=True,
        description="upsert SagaStatus/SagaStep/business keys (registered on the server)",
    )
    saga_escalate_after_s: float = Field(
        default=3600.0,
        ge=0,
        description="parked longer than this: CompensationEscalated (0 = never)",
    )
    # Payment simulator (the built-in PaymentProvider): decisions hash the order id.
    payment_latency_ms: float = Field(default=0.0, ge=0)
    payment_decline_rate: float = Field(default=0.0, ge=0, le=1)
    payment_transient_error_rate: float = Field(default=0.0, ge=0, le=1)
    payment_refund_outage_file: str = Field(
        default="",
        description="while this file exists, simulated refunds fail (an outage drill)",
    )
    # Worker: concurrency limits and graceful shutdown.
    # Why 10, not the SDK's 100: one Python process runs the workflow code. After a
    # restart with a backlog, 100 concurrent tasks (each replaying its history and
    # running its local activities) each took longer than the 10 s task timeout on
    # two cores, all timed out, and no saga progressed (bench.reliability,
    # worker_kill); at 10 each task finishes and the backlog drains.
    worker_max_concurrent_workflow_tasks: int = Field(
        default=10, ge=1, description="workflow tasks run at once"
    )
    worker_max_concurrent_activities: int = Field(default=100, ge=1)
    worker_max_concurrent_local_activities: int = Field(default=100, ge=1)
    worker_workflow_task_pollers: int = Field(default=4, ge=2)
    worker_activity_task_pollers: int = Field(default=4, ge=1)
    worker_sticky_schedule_to_start_s: float = Field(
        default=3.0, gt=0, description="how long a dead worker's sticky tasks wait"
    )
    worker_graceful_shutdown_s: float = Field(default=30.0, ge=0)
    worker_max_cached_workflows: int = Field(
        default=1000,
        ge=0,
        description="workflow runs kept in memory (about 0.2 MiB each); an evicted run "
        "replays its history at its next task",
    )
    worker_sandbox_engine: bool = Field(
        default=True,
        description="pass the engine's modules through the workflow sandbox (imported "
        "once, not per saga run); false re-imports them into every run",
    )
    # Fault injection for tests: "<activity name>" commits its events, then fails once.
    fault_commit_then_fail: str = Field(default="", description="off when empty")
    # "<activity name>" commits its events, then hangs until the worker is killed.
    fault_hang_after_commit: str = Field(default="", description="off when empty")

    # --- streaming settings (issue 5): add relay/projection/Kafka fields below this line ---
    kafka_topic: str = Field(default="sagaflow.events", description="topic of all events")
    kafka_partitions: int = Field(default=6, ge=1, le=1000)
    kafka_replication_factor: int | None = Field(
        default=None, ge=1, le=10, description="of created topics; unset: SAGAFLOW_KAFKA_BROKERS"
    )
    kafka_min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        le=10,
        description="of created topics; unset: half the replicas, rounded up",
    )
    kafka_dead_letter_topic: str = Field(default="sagaflow.events.dlt")
    relay_name: str = Field(default="main", description="relay checkpoint row")
    relay_batch_size: int = Field(default=1000, ge=1, le=100_000)
    relay_linger_ms: int = Field(default=5, ge=0, le=10_000)
    relay_poll_interval_s: float = Field(default=0.05, gt=0)
    relay_horizon_alert_s: float = Field(
        default=10.0, gt=0, description="warn when an open transaction holds the feed longer"
    )
    relay_backoff_initial_s: float = Field(default=0.2, gt=0)
    relay_backoff_max_s: float = Field(default=10.0, gt=0)
    # Relay high availability (issue 16): any number of relays run, the holder of the
    # destination's lease publishes (streaming/lease.py).
    relay_id: str = Field(
        default="", max_length=200, description="this relay in logs and /metrics; '' = host:pid"
    )
    relay_standby_poll_s: float = Field(
        default=0.5, gt=0, le=60, description="how often a standby relay tries to take the lease"
    )
    relay_lease_heartbeat_s: float = Field(
        default=1.0, gt=0, le=60, description="how often the active relay checks its lease"
    )
    relay_lease_timeout_s: float = Field(
        default=5.0, ge=1, le=3600, description="a relay silent this long loses its lease"
    )
    projector_group: str = Field(default="sagaflow-projector", description="consumer group")
    projector_batch_size: int = Field(default=2000, ge=1, le=100_000)
    projector_poll_interval_s: float = Field(default=0.05, gt=0)
    projector_retry_attempts: int = Field(default=3, ge=1, le=100)
    projector_backoff_initial_s: float = Field(default=0.1, ge=0)
    projector_backoff_max_s: float = Field(default=5.0, gt=0)
    projection_lag_max_events: int = Field(default=10_000, ge=0, description="429 above")
    projection_lag_max_s: float = Field(default=30.0, gt=0, description="backpressure")

    # --- api settings (issue 6) ---
    api_host: str = Field(default="127.0.0.1", description="address the API binds to")
    api_port: int = Field(default=8000, ge=0, le=65535, description="0 = a free port")
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="request body cap")
    console_session_ttl_s: int = Field(
        default=8 * 3600, ge=60, le=30 * 24 * 3600, description="console session lifetime"
    )
    api_page_size_max: int = Field(default=200, ge=1, le=10_000, description="list results cap")
    consistency_wait_max_s: float = Field(default=5.0, ge=0, description="read-your-writes wait")
    backpressure_relay_lag_events: int = Field(default=50_000, ge=0, description="429 above")
    backpressure_temporal_backlog: int = Field(default=5_000, ge=0, description="429 above")
    backpressure_retry_after_s: int = Field(default=5, ge=1)
    # Temporal client TLS (mTLS, as Temporal Cloud needs): file paths.
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: SecretStr | None = None
    # Kafka security, passed through to aiokafka.
    kafka_security_protocol: str = Field(
        default="PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$"
    )
    kafka_sasl_mechanism: str | None = Field(
        default=None, pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$"
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    service_start_timeout_s: float = Field(default=120.0, gt=0)

    # --- transports (issue 13): the transport port, RabbitMQ, integration subscribers ---
    transport: Transport | None = Field(
        default=None, description="kafka | rabbitmq | embedded (unset: kafka)"
    )
    #: Kafka topic retention, set when the topic is created (-1 = keep forever). New read
    #: models bootstrap from the event store, so records older than this are never needed.
    kafka_retention_ms: int = Field(default=7 * 86400 * 1000, ge=-1)
    rabbitmq_url: str | None = Field(default=None, description="amqp[s]://user:pass@host:port/")
    rabbitmq_port: int = Field(default=0, ge=0, le=65535, description="the local broker")
    rabbitmq_dist_port: int = Field(default=0, ge=0, le=65535)
    rabbitmq_username: str = Field(default="guest", description="used when the URL has none")
    rabbitmq_password: SecretStr = SecretStr("guest")
    rabbitmq_ssl_cafile: Path | None = None
    rabbitmq_ssl_certfile: Path | None = None
    rabbitmq_ssl_keyfile: Path | None = None
    rabbitmq_bin_dir: Path = Field(
        default=Path("/usr/lib/rabbitmq/bin"), description="Debian's rabbitmq-server"
    )
    rabbitmq_exchange: str = Field(default="sagaflow.events", description="topic exchange")
    #: shard queues per projector group; a stream always hashes to the same one.
    #: Why fixed: changing it moves streams between queues, which could reorder them.
    rabbitmq_shards: int = Field(default=4, ge=1, le=256)
    rabbitmq_prefetch: int = Field(default=2000, ge=1, le=65535)
    rabbitmq_confirm_window: int = Field(default=1000, ge=1, le=100_000)
    subscriber_retry_attempts: int = Field(default=5, ge=1, le=100)
    subscriber_backoff_initial_s: float = Field(default=0.5, gt=0)

    # --- payload encryption (issue 16): sagaflow/codec.py ---
    #: "id:<base64 of 32 bytes>,id:..." (off when unset): every key that may still be
    #: needed to decrypt; the one named by codec_key_id (default: the first) encrypts.
    codec_keys: SecretStr | None = Field(
        default=None, description="payload encryption keyring id:<base64 32 bytes>,... (off)"
    )
    codec_key_id: str | None = Field(
        default=None, description="the key id that encrypts (unset: the first listed)"
    )
    codec_cors_origins: str = Field(
        default="",
        description="origins allowed to call /codec (unset: the Temporal Web UI's)",
    )
    codec_endpoint: str | None = Field(
        default=None,
        description="the /codec URL the dev server's Web UI calls (unset: the API's)",
    )

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

    @field_validator("kafka_brokers")
    @classmethod
    def _one_broker_or_a_quorum_of_three(cls, value: int) -> int:
        # Why not 2: a 2-voter quorum stops when either node stops, so it buys nothing;
        # more than 3 JVMs do not fit a development machine.
        if value not in (1, 3):
            raise ValueError("must be 1 (one broker) or 3 (a three-broker cluster)")
        return value

    @field_validator("rabbitmq_url")
    @classmethod
    def _rabbitmq_url_is_amqp(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must start with amqp:// or amqps:// (a RabbitMQ broker URL)")
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_key_scopes_are_known(cls, value: dict[str, str]) -> dict[str, str]:
        for key, scopes in value.items():
            unknown = {s.strip() for s in scopes.split(",")} - {"read", "write", "admin"}
            if len(key) < 16:
                raise ValueError("every API key must be at least 16 characters")
            if unknown:
                raise ValueError(f"unknown scope(s) {sorted(unknown)}: use read, write, admin")
        return value

    @field_validator("codec_keys", mode="before")
    @classmethod
    def _empty_keyring_is_off(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("codec_key_id", "codec_endpoint", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _codec_keys_are_usable(self) -> Settings:
        # Why here and not in a field validator: a field error would echo the value
        # (the keys) in the message; this one names the variable and the key id only.
        from sagaflow.codec import parse_keys

        if self.codec_keys is None:
            if self.codec_key_id is not None:
                raise ValueError(
                    f"{ENV_PREFIX}CODEC_KEY_ID: set to {self.codec_key_id!r}, but "
                    f"{ENV_PREFIX}CODEC_KEYS is not (no keyring to choose the key from)"
                )
            return self
        try:
            keys = parse_keys(self.codec_keys.get_secret_value())
        except ValueError as exc:
            raise ValueError(f"{ENV_PREFIX}CODEC_KEYS: {exc}") from None
        if self.codec_key_id is not None and self.codec_key_id not in keys:
            raise ValueError(
                f"{ENV_PREFIX}CODEC_KEY_ID: {self.codec_key_id!r} is not in "
                f"{ENV_PREFIX}CODEC_KEYS (its ids: {', '.join(keys)})"
            )
        return self

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
                self.rabbitmq_port,
                self.rabbitmq_dist_port,
            )
            if p
        ]
        if len(distinct) != len(set(distinct)):
            raise ValueError("the fixed service ports must differ from each other")
        if self.relay_lease_heartbeat_s * 2 > self.relay_lease_timeout_s:
            raise ValueError(
                f"{ENV_PREFIX}RELAY_LEASE_HEARTBEAT_S ({self.relay_lease_heartbeat_s:g}) must be "
                f"at most half of {ENV_PREFIX}RELAY_LEASE_TIMEOUT_S "
                f"({self.relay_lease_timeout_s:g}), or a live relay loses its lease"
            )
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"{ENV_PREFIX}KAFKA_MIN_INSYNC_REPLICAS: {self.topic_min_insync_replicas} is more "
                f"than the topics' replication factor {self.topic_replication_factor}, so no "
                "write could ever be acknowledged"
            )
        if self.transport is None and not self.kafka_enabled and not _DEPRECATION_SAID:
            _DEPRECATION_SAID.append(True)
            logging.getLogger("sagaflow.settings").warning(
                "SAGAFLOW_KAFKA_ENABLED=false is deprecated: set SAGAFLOW_TRANSPORT=embedded"
            )
        if self.transport is not None:
            # Why: code (and other processes' env) still reading kafka_enabled must agree.
            self.kafka_enabled = self.transport is Transport.KAFKA
        return self

    @property
    def transport_kind(self) -> Transport:
        """The chosen transport: SAGAFLOW_TRANSPORT, else the deprecated Kafka switch."""
        if self.transport is not None:
            return self.transport
        return Transport.KAFKA if self.kafka_enabled else Transport.EMBEDDED

    @property
    def codec_enabled(self) -> bool:
        """True when payloads sent to Temporal are encrypted (SAGAFLOW_CODEC_KEYS set)."""
        return self.codec_keys is not None

    @property
    def codec_origins(self) -> list[str]:
        """Origins allowed to call the API's /codec routes from a browser (CORS)."""
        listed = [o.strip().rstrip("/") for o in self.codec_cors_origins.split(",")]
        origins = [o for o in listed if o]
        if not origins and self.temporal_ui_url:
            origins = [_origin_of(self.temporal_ui_url)]
        return origins

    def codec_ui_endpoint(self) -> str | None:
        """The remote codec URL for the dev server's Web UI: SAGAFLOW_CODEC_ENDPOINT, else
        the API's ``/codec`` when its port is fixed; None with the codec off or the port
        unknown (SAGAFLOW_API_PORT=0 outside ``sagaflow dev``)."""
        if not self.codec_enabled:
            return None
        if self.codec_endpoint:
            return self.codec_endpoint.rstrip("/")
        if not self.api_port:
            return None
        # Why: the browser cannot call a wildcard bind address.
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        return f"http://{host}:{self.api_port}/codec"

    @property
    def topic_replication_factor(self) -> int:
        """Replicas of each topic sagaflow creates: the setting, else one per local broker."""
        return self.kafka_replication_factor or self.kafka_brokers

    @property
    def topic_min_insync_replicas(self) -> int:
        """``min.insync.replicas`` of each topic sagaflow creates: the setting, else half
        its replicas rounded up (1 of 1, 2 of 3): with acks=all an acknowledged write is
        then on at least two brokers of three, and a partition stays writable while one
        broker is down."""
        return self.kafka_min_insync_replicas or (self.topic_replication_factor + 1) // 2

    @property
    def kafka_broker_heap_mb(self) -> int:
        """Heap of each local broker JVM: the setting, else 512 MB alone, 256 MB each of 3."""
        return self.kafka_heap_mb or (512 if self.kafka_brokers == 1 else 256)

    @property
    def kafka_mode(self) -> bool:
        """True when projections are fed through Kafka."""
        return self.transport_kind is Transport.KAFKA

    def with_transport(self, transport: Transport | str) -> Settings:
        """A copy using ``transport`` (keeps the deprecated switch consistent)."""
        chosen = Transport(transport)
        return self.model_copy(
            update={"transport": chosen, "kafka_enabled": chosen is Transport.KAFKA}
        )


def _origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL (what a browser sends as Origin)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


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
