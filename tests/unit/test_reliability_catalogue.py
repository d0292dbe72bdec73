"""Which fault scenarios a reliability stack runs, by transport."""

from __future__ import annotations

import pytest

from bench.reliability.__main__ import main
from bench.reliability.scenarios import ONLY_ON, SCENARIOS, scenarios_for


def test_each_transport_runs_the_shared_scenarios_and_its_own_restart() -> None:
    kafka, rabbit = scenarios_for("kafka"), scenarios_for("rabbitmq")
    assert "kafka_restart" in kafka and "rabbitmq_restart" not in kafka
    assert "rabbitmq_restart" in rabbit and "kafka_restart" not in rabbit
    shared = set(SCENARIOS) - set(ONLY_ON)
    assert "kafka_leader_kill" in kafka and "kafka_leader_kill" not in rabbit
    assert shared <= set(kafka) and shared <= set(rabbit)


def test_a_scenario_of_the_other_transport_is_refused_before_any_stack_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--only", "rabbitmq_restart", "--quick"])
    assert exit_.value.code == 2
    assert "rabbitmq_restart runs on rabbitmq only" in capsys.readouterr().err
