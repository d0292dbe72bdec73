"""Contracts of the returns saga's activities: typed references for the workflow.

The implementations live in ``activities/returns.py`` under the same names. Why
stubs: workflow code imports nothing from ``activities/`` (I/O, psycopg), and each
compensation stays a typed reference, never a string.
"""

from __future__ import annotations

from temporalio import activity

from workflows.returns_models import (
    CloseReturn,
    NotifyReturn,
    OpenReturn,
    ReceiveReturn,
    RefundReturn,
    RestockReturn,
    ReturnOpenedResult,
)

_IMPLEMENTED = "implemented in activities/returns.py and registered by the worker"


@activity.defn(name="open_return")
async def open_return(req: OpenReturn) -> ReturnOpenedResult:
    """Claim the units on the order (refused beyond what was delivered), open the return."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="close_return")
async def close_return(req: CloseReturn) -> bool:
    """Cancel or expire the return and release its units on the order (compensation)."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="receive_return")
async def receive_return(req: ReceiveReturn) -> None:
    """Record that the goods arrived."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="restock_return")
async def restock_return(req: RestockReturn) -> bool:
    """Put one line's returned units back in available stock."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="unstock_return")
async def unstock_return(req: RestockReturn) -> bool:
    """Take a line's restocked units out again (compensation); no-op if never restocked."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="refund_return")
async def refund_return(req: RefundReturn) -> int:
    """Refund the return's total through the payment provider; returns the cents."""
    raise NotImplementedError(_IMPLEMENTED)


@activity.defn(name="notify_return")
async def notify_return(req: NotifyReturn) -> None:
    """Notify the customer of the refund and close the return."""
    raise NotImplementedError(_IMPLEMENTED)
