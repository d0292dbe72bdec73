"""Kafka over SASL_SSL (SCRAM-SHA-512, a CA and certificate made here): the relay, the
projector, topic creation and the lag probe all connect with the settings' security,
and wrong credentials stop them with one line instead of retrying forever."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bench.workload import background, register_products, run_orders, wait_for
from eventstore.postgres import PostgresEventStore
from projections.handlers import default_projections
from projections.runner import run_projector
from projections.verify import verify_against_rebuild
from sagaflow.services.base import free_port
from sagaflow.services.kafka import KafkaService
from sagaflow.settings import Settings
from streaming.relay import run_relay
from streaming.transport import TransportRefused
from tests.integration.streaming_support import SKUS, caught_up, settings_for_test

pytestmark = pytest.mark.integration

USER, PASSWORD = "sagaflow", "scram-secret-42"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> tuple[Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem)."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=sagaflow test CA",
        cwd=folder,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=folder,
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=folder,
    )
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.p8", cwd=folder)
    # Kafka's PEM key store: the (PKCS#8) key, then the certificate chain
    server = folder / "server.pem"
    server.write_text(
        (folder / "server.p8").read_text()
        + (folder / "server.crt").read_text()
        + (folder / "ca.pem").read_text()
    )  # fmt: skip
    return folder / "ca.pem", server


@pytest.fixture(scope="module")
def secure_kafka(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings, kafka_bootstrap: str
) -> Iterator[tuple[str, Path]]:
    """A broker of its own with a SASL_SSL listener: (its address, the CA file)."""
    folder = tmp_path_factory.mktemp("secure-kafka")
    ca, server = make_certificates(folder)
    plain, controller, port = free_port(), free_port(), free_port()
    service = KafkaService(
        settings.model_copy(
            update={"data_dir": folder, "kafka_port": plain, "kafka_controller_port": controller}
        )
    )
    service.format_args = ["--add-scram", f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"]
    service.extra_properties = f"""
listeners=PLAINTEXT://127.0.0.1:{plain},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{port}
advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location={server}
"""  # noqa: E501
    service.start()
    try:
        yield f"127.0.0.1:{port}", ca
    finally:
        service.stop()


def _secure(s: Settings, address: str, ca: Path, password: SecretStr) -> Settings:
    return s.model_copy(
        update={
            "kafka_bootstrap": address,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": password,
            "kafka_ssl_cafile": ca,
            "relay_backoff_max_s": 1.0,
            "projector_backoff_max_s": 1.0,
        }
    )


async def test_relay_and_projector_work_through_a_sasl_ssl_listener(
    secure_kafka: tuple[str, Path],
    settings: Settings,
    database_url: str,
    unique: str,
    pg_store: PostgresEventStore,
):
    address, ca = secure_kafka
    s = _secure(settings_for_test(settings, database_url, unique), address, ca, SecretStr(PASSWORD))
    await register_products(pg_store, SKUS)
    async with (
        background(lambda stop: run_relay(s, stop)) as relay,
        background(lambda stop: run_projector(s, stop)) as projector,
    ):
        await run_orders(pg_store, 30, prefix="tls-", skus=SKUS)
        await wait_for(lambda: caught_up(pg_store, s), what="SASL_SSL", watch=projector)
        assert not relay.done()
    live, rebuilt = await verify_against_rebuild(pg_store, default_projections())
    assert live == rebuilt


@pytest.mark.parametrize("process", ["relay", "projector"])
async def test_wrong_kafka_credentials_stop_relay_and_projector_with_one_line(
    process: str,
    secure_kafka: tuple[str, Path],
    settings: Settings,
    database_url: str,
    unique: str,
):
    address, ca = secure_kafka
    s = _secure(settings_for_test(settings, database_url, unique), address, ca, SecretStr("nope"))
    run = run_relay if process == "relay" else run_projector
    with pytest.raises(TransportRefused) as refused:
        await asyncio.wait_for(run(s), 60)
    message = str(refused.value)
    assert "\n" not in message
    assert "Kafka refused the connection" in message and "SAGAFLOW_KAFKA_SASL" in message
