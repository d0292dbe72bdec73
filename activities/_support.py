"""Shared plumbing of the activities: metadata, business failures, conflict retries,
fault injection."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.errors import DomainError, InsufficientStock
from eventstore.repository import on_conflict_retry
from workflows.models import COMMAND_REFUSED, OUT_OF_STOCK, StepContext

__all__ = [
    "CommitThenFail",
    "FaultInjector",
    "business_failure",
    "event_metadata",
    "id_prefix",
    "on_conflict_retry",
]


def event_metadata(ctx: StepContext) -> dict[str, Any]:
    """The envelope metadata of events written by the activity running ``ctx``."""
    activity_id = activity.info().activity_id if activity.in_activity() else ""
    return {
        "correlation_id": ctx.workflow_id,
        "causation_id": f"{ctx.workflow_id}/{ctx.step}",
        "user_id": ctx.user_id or ctx.customer_id,
        "workflow_id": ctx.workflow_id,
        "activity_id": activity_id,
    }


def id_prefix(ctx: StepContext) -> tuple[str, str]:
    """The deterministic event-id prefix of a step: (workflow id, step)."""
    return (ctx.workflow_id, ctx.step)


def business_failure(err: DomainError) -> ApplicationError:
    """A non-retryable ApplicationError for a domain refusal.

    Why non-retryable: the same command against the same state gets the same
    answer; retrying only delays the compensation.
    """
    error_type = OUT_OF_STOCK if isinstance(err, InsufficientStock) else COMMAND_REFUSED
    return ApplicationError(str(err), type=error_type, non_retryable=True)


class CommitThenFail(Exception):
    """The injected fault: the activity's events are committed, then it fails."""


class FaultInjector:
    """Test-only fault points right after an activity's commit (settings; empty = off).

    ``activity_name`` (``fault_commit_then_fail``) fails that activity's first attempt
    after its commit: proves retries write nothing twice. ``hang_after_commit``
    (``fault_hang_after_commit``) blocks that activity's first attempt after its commit
    until the worker dies: the commit is in the store, but the workflow task that ran
    it never completes (a crash between the two).
    """

    def __init__(self, activity_name: str = "", hang_after_commit: str = "") -> None:
        self.activity_name = activity_name
        self.hang_after_commit = hang_after_commit

    async def after_commit(self, name: str) -> None:
        """Raise (or hang) on the first attempt of ``name`` when it is a fault point."""
        if not activity.in_activity() or activity.info().attempt != 1:
            return
        if name == self.hang_after_commit:
            activity.logger.warning("injected fault: %s committed, now hanging", name)
            # Never finishes: only a kill of the worker ends it.
            await asyncio.Event().wait()
        if self.activity_name and name == self.activity_name:
            raise CommitThenFail(f"injected fault: {name} committed, then failed")
