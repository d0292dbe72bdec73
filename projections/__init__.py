"""Projections: read models and analytics in PostgreSQL, fed from Kafka or the store.

Entry points: ``projections.runner.run_projector`` (process),
``projections.runner.projector_lag`` (metrics, backpressure), ``projections.queries``
(the API's read side), ``projections.deadletters`` (list, replay, skip),
``projections.rebuild.rebuild`` and ``projections.cli.app`` (``sagaflow projector``,
``sagaflow projections rebuild NAME``, ``sagaflow dead-letters ...``).
"""
