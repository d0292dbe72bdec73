"""Clients built from settings, in one place: Temporal (with TLS and the payload codec)
and Kafka security options.

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
    """A Temporal client for the configured namespace, with mTLS / API key when set and
    the payload codec (``sagaflow.codec.data_converter``) when SAGAFLOW_CODEC_KEYS is.

    Why every client comes from here (worker, API, CLI): a client with another data
    converter would write payloads the others cannot read, or read ciphertext.
    """
    from temporalio.client import Client
    from temporalio.service import TLSConfig

    from sagaflow.codec import data_converter

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
        data_converter=data_converter(settings),
    )


def kafka_client_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for every aiokafka constructor: bootstrap list, SASL and TLS.

    Why one factory: a client built without it would connect in plaintext whatever
    the settings say (the relay, projector, admin clients and ``/ready`` all use it).
    """
    if not settings.kafka_bootstrap:
        raise SettingsError(
            "SAGAFLOW_KAFKA_BOOTSTRAP is not set (or set SAGAFLOW_TRANSPORT=embedded "
            "to run projections on the event store's feed)"
        )
    options = {"bootstrap_servers": settings.kafka_bootstrap, **kafka_security(settings)}
    options.update(overrides)
    return options


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


def rabbitmq_url(settings: Settings) -> str:
    """The broker URL, with the configured user and password when the URL names none."""
    if not settings.rabbitmq_url:
        raise SettingsError(
            "SAGAFLOW_RABBITMQ_URL is not set: give amqp://host:port/ of a broker "
            "(or run 'sagaflow services up rabbitmq', which starts one)"
        )
    url = settings.rabbitmq_url
    scheme, _, rest = url.partition("://")
    if "@" not in rest.split("/", 1)[0]:
        from urllib.parse import quote

        user = quote(settings.rabbitmq_username, safe="")
        password = quote(settings.rabbitmq_password.get_secret_value(), safe="")
        url = f"{scheme}://{user}:{password}@{rest}"
    return url


async def connect_rabbitmq(settings: Settings, **kwargs: Any) -> Any:
    """An aio-pika connection with the settings' credentials and TLS (every caller uses it).

    TLS is on for ``amqps://`` URLs; the CA, certificate and key come from
    SAGAFLOW_RABBITMQ_SSL_CAFILE / _CERTFILE / _KEYFILE.
    """
    import ssl

    import aio_pika

    url = rabbitmq_url(settings)
    context = None
    if url.startswith("amqps://"):
        context = ssl.create_default_context(
            cafile=str(settings.rabbitmq_ssl_cafile) if settings.rabbitmq_ssl_cafile else None
        )
        if settings.rabbitmq_ssl_certfile:
            context.load_cert_chain(
                str(settings.rabbitmq_ssl_certfile),
                str(settings.rabbitmq_ssl_keyfile) if settings.rabbitmq_ssl_keyfile else None,
            )
    return await aio_pika.connect(url, ssl_context=context, **kwargs)
