"""Deliberately broken variants of the order saga: the kit must catch them.

Importable by the workflow sandbox (no test_ prefix); used by
``tests/integration/test_saga_kit_control.py``.
"""

from __future__ import annotations

from dataclasses import replace

from temporalio import workflow

from workflows.models import OrderSagaInput, OrderSagaResult
from workflows.order_saga import ORDER, OrderSagaWorkflow
from workflows.registry import SagaRegistry, SagaType

FORWARD = replace(ORDER, name="BrokenOrderForwardCompensation")
MISSING = replace(ORDER, name="BrokenOrderMissingRefund")


@workflow.defn(name=FORWARD.name)
class ForwardCompensationOrderSaga(OrderSagaWorkflow):
    """Compensates in forward order (releases before refunding)."""

    definition = FORWARD

    @workflow.run
    async def run(self, input: OrderSagaInput) -> OrderSagaResult:
        """Unchanged run; only the compensation order differs."""
        return await super().run(input)

    async def _compensate(self, reason: str) -> OrderSagaResult:
        self.saga._stack.reverse()
        return await super()._compensate(reason)


@workflow.defn(name=MISSING.name)
class MissingRefundOrderSaga(OrderSagaWorkflow):
    """Forgets the charge's compensation: a failed order keeps the money."""

    definition = MISSING

    @workflow.run
    async def run(self, input: OrderSagaInput) -> OrderSagaResult:
        """Unchanged run; only the charge's compensation is dropped."""
        return await super().run(input)

    async def _compensate(self, reason: str) -> OrderSagaResult:
        stack = self.saga._stack
        stack[:] = [c for c in stack if c.step != "charge"]
        return await super()._compensate(reason)


def broken_registry() -> SagaRegistry:
    """The broken variants, with the order saga's real activities."""
    return SagaRegistry(
        [
            SagaType(
                FORWARD, ForwardCompensationOrderSaga, "activities.order_saga:build_activities"
            ),
            SagaType(MISSING, MissingRefundOrderSaga, "activities.order_saga:build_activities"),
        ]
    )
