"""Bad input around the transports: one line saying what to do, exit 2, nothing left running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from sagaflow.settings import Settings

pytestmark = pytest.mark.integration


def _sagaflow(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagaflow.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _processes_using(folder: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + str(proc.info["environ"] or {})
        except psutil.Error:
            continue
        if str(folder) in text:
            found.append(proc)
    return found


@pytest.mark.parametrize("command", ["relay", "projector"])
def test_an_unknown_transport_is_one_line_naming_the_variable(command: str, tmp_path: Path):
    result = _sagaflow(
        [command],
        {"SAGAFLOW_TRANSPORT": "carrier-pigeon", "SAGAFLOW_DATA_DIR": str(tmp_path),
         "SAGAFLOW_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"},
    )  # fmt: skip
    line = _one_error_line(result)
    assert "SAGAFLOW_TRANSPORT" in line and "rabbitmq" in line


def test_a_missing_rabbitmq_package_says_how_to_install_it(tmp_path: Path):
    result = _sagaflow(
        ["services", "up", "rabbitmq"],
        {"SAGAFLOW_DATA_DIR": str(tmp_path), "SAGAFLOW_RABBITMQ_BIN_DIR": str(tmp_path / "none")},
    )
    assert "apt-get install -y rabbitmq-server" in _one_error_line(result)
    assert not (tmp_path / "services.json").exists()
    assert _processes_using(tmp_path) == []


def test_a_taken_rabbitmq_port_is_one_line_and_nothing_is_left_running(
    tmp_path: Path, rabbitmq_url: str
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _sagaflow(
            ["services", "up", "rabbitmq"],
            {"SAGAFLOW_DATA_DIR": str(tmp_path), "SAGAFLOW_RABBITMQ_PORT": str(port)},
        )
    line = _one_error_line(result)
    assert f"port {port}" in line and "SAGAFLOW_RABBITMQ_PORT" in line
    assert _processes_using(tmp_path) == []


def test_wrong_rabbitmq_credentials_stop_the_relay_with_one_line(
    settings: Settings, database_url: str, rabbitmq_url: str, tmp_path: Path
):
    wrong = rabbitmq_url.replace("amqp://", "amqp://guest:not-the-password@")
    result = _sagaflow(
        ["relay"],
        {"SAGAFLOW_TRANSPORT": "rabbitmq", "SAGAFLOW_RABBITMQ_URL": wrong,
         "SAGAFLOW_DATABASE_URL": database_url, "SAGAFLOW_DATA_DIR": str(tmp_path)},
    )  # fmt: skip
    assert "RabbitMQ refused the connection" in _one_error_line(result)
