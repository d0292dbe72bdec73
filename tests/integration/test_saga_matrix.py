"""Every saga type's failure matrix, one test per scenario (``order/charge/reject``).

The scenarios come from the definitions (``sagaflow.testing.matrix``): a step added
to a saga adds its tests here without a line changed. Each runs on the session's
time-skipping server with the type's real activities over an in-memory store.
"""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment

from sagaflow.testing import MatrixRunner, Scenario, matrix
from sagaflow.testing.kits import KITS
from workflows.registry import default_registry

pytestmark = pytest.mark.integration

_REGISTRY = default_registry()
SCENARIOS = [
    scenario
    for kit in KITS.values()
    for scenario in matrix(_REGISTRY.get(kit.saga_type).definition, kit.name)
]


def test_every_registered_saga_type_has_a_kit() -> None:
    assert {kit.saga_type for kit in KITS.values()} == set(_REGISTRY.names)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
async def test_scenario(time_skipping_env: WorkflowEnvironment, scenario: Scenario) -> None:
    kit = KITS[scenario.saga_type]
    report = await MatrixRunner(kit, time_skipping_env).run_one(scenario)
    assert report.invariants > 4
    assert report.passed, "\n".join([*report.failures, "notes:", *report.notes])
    assert report.held == report.invariants
