"""Clients built from settings, in one place: Temporal (with TLS) and Kafka security options.

Each process calls these from its own wiring code; nothing connects at import time.
"""

from __future__ import annotations

from typing import Any

from sagaflow.settings import Settings, SettingsError


def temporal_address(settings: Settings) -> str:
    """The Temporal frontend address; an error naming the variable when unset."""
    if not settings.temporal_address:
        raise SettingsError(
            "SAGAFLOW_TEMPORAL_ADDRESS is not set: give host:port of a Temporal frontend "
            "(or run 'sagaflow dev', which starts one)"
        )
    return settings.temporal_address


async def connect_temporal(settings: Settings) -> Any:
    """A Temporal client for the configured namespace, with mTLS / API key when set."""
    from temporalio.client import Client
    from temporalio.service import TLSConfig

    tls: TLSConfig | bool = False
    if settings.temporal_tls:
        tls = TLSConfig(
            client_cert=settings.temporal_tls_cert.read_bytes()
            if settings.temporal_tls_cert
            else None,
            client_private_key=settings.temporal_tls_key.read_bytes()
            if settings.temporal_tls_key
            else None,
            server_root_ca_cert=settings.temporal_tls_ca.read_bytes()
            if settings.temporal_tls_ca
            else None,
            domain=settings.temporal_tls_server_name,
        )
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        temporal_address(settings),
        namespace=settings.temporal_namespace,
        tls=tls,
        api_key=api_key,
    )


def kafka_security(settings: Settings) -> dict[str, Any]:
    """SASL/TLS keyword arguments for aiokafka producers, consumers and admin clients."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value()
            if settings.kafka_sasl_password
            else None
        )
    return options
