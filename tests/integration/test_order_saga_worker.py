"""The worker process: starts from the CLI, polls, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sagaflow.settings import Settings

pytestmark = pytest.mark.integration


def test_worker_command_shuts_down_gracefully_on_sigterm(
    settings: Settings, database_url: str, unique: str
) -> None:
    assert settings.temporal_address
    env = {
        **os.environ,
        "SAGAFLOW_TEMPORAL_ADDRESS": settings.temporal_address,
        "SAGAFLOW_DATABASE_URL": database_url,
        "SAGAFLOW_TASK_QUEUE": f"q-{unique}",
        "SAGAFLOW_KAFKA_ENABLED": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from sagaflow.cli_saga import app; app()", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        seen = ""
        assert proc.stdout is not None
        while time.monotonic() < deadline and "worker polling" not in seen:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert "worker polling" in seen, seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        rest = proc.stdout.read()
        assert "stopping" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
