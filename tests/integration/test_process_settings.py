"""Every process command resolves the services' addresses through one settings path:
without a database and without ``sagaflow services up`` each says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sagaflow.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("command", [["projector"], ["relay"], ["api"], ["dead-letters", "list"]])
def test_a_process_without_a_database_says_how_to_get_one(
    command: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAFLOW_")}
    env["SAGAFLOW_DATA_DIR"] = str(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "sagaflow.cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "sagaflow services up" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_the_projector_finds_the_services_of_services_up(
    settings: Settings, local_services: object, tmp_path: Path
) -> None:
    """``services up`` state in the data folder is enough: no address in the environment."""
    data_dir = Path(str(settings.data_dir))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAFLOW_")}
    env.update({"SAGAFLOW_DATA_DIR": str(data_dir), "SAGAFLOW_TRANSPORT": "embedded"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "sagaflow.cli", "projector"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=8)  # still running: it found PostgreSQL
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "DATABASE_URL is not set" not in output, output
