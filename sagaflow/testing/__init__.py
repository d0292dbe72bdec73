"""sagaflow's saga test kit: a failure matrix derived from a saga's definition, run on
the time-skipping test server with the type's real activities, invariants checked
after every scenario.

Use it from your own tests::

    from sagaflow.testing import SagaKit, matrix, run_kit

See ``docs/sagas.md`` ("Testing a saga") for a kit of your own.
"""

from sagaflow.testing.faults import FaultBoard, KitInterceptor
from sagaflow.testing.invariants import ENGINE_INVARIANTS, Invariant, Observation
from sagaflow.testing.runner import (
    KIT_SETTINGS,
    NO_ARGUMENT,
    KitContext,
    MatrixRunner,
    SagaKit,
    ScenarioReport,
    run_kit,
    start_test_server,
)
from sagaflow.testing.scenarios import Fault, Mode, Scenario, matrix

__all__ = [
    "ENGINE_INVARIANTS",
    "KIT_SETTINGS",
    "NO_ARGUMENT",
    "Fault",
    "FaultBoard",
    "Invariant",
    "KitContext",
    "KitInterceptor",
    "MatrixRunner",
    "Mode",
    "Observation",
    "SagaKit",
    "Scenario",
    "ScenarioReport",
    "matrix",
    "run_kit",
    "start_test_server",
]
