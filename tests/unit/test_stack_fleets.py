"""Fleets of workers and projectors in one stack: names, commands, refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sagaflow.services import ServiceError
from sagaflow.settings import load_settings
from sagaflow.stack import Stack, command_of, fleet_names


def test_a_fleet_of_one_is_the_process_of_old() -> None:
    assert fleet_names("worker", 1) == ["worker"]
    assert fleet_names("projector", 3) == ["projector", "projector-2", "projector-3"]


def test_each_copy_runs_its_kind_s_command() -> None:
    assert [command_of(n) for n in fleet_names("worker", 3)] == ["worker"] * 3
    assert command_of("relay") == "relay"
    for bad in ("worker-x", "shell", "projector-2-3"):
        with pytest.raises(ValueError, match="not a stack process name"):
            command_of(bad)


def test_several_projectors_on_the_embedded_feed_are_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    stack = Stack(load_settings(data_dir=tmp_path, transport="embedded"), projectors=2)
    with pytest.raises(ServiceError, match="need a broker to share the events"):
        stack.start()
    assert stack.services is None and stack.procs == {}


def test_a_fleet_size_out_of_range_is_refused(tmp_path: Path) -> None:
    stack = Stack(load_settings(data_dir=tmp_path, transport="embedded"), workers=17)
    with pytest.raises(ServiceError, match=r"workers: 17 is out of range \(1 to 16\)"):
        stack.start()
    assert stack.services is None


def test_the_cli_refuses_a_fleet_of_none_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sagaflow.cli", "dev", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SAGAFLOW_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "--workers" in done.stderr and "Traceback" not in done.stderr
