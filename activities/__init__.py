"""Temporal activities of the order saga: each appends its facts to the event store.

Activities are methods on classes built with their dependencies in ``worker.py``.
Every activity is idempotent twice over: event ids derive from (workflow id, step,
index), so a retried append is a no-op, and each one first checks the aggregate
(e.g. "the reservation derived from this workflow is already open") so a retry after
a commit raises no new events at all.
"""
