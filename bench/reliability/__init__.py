"""Fault-injection suite: the whole stack under faults, load and bad input, with figures.

``python -m bench.reliability [--quick]`` runs every scenario of ``scenarios`` against
one dedicated stack and prints a table and a ``RESULT {json}`` line; the oracle of
``oracle`` checks the invariants from the event store after each scenario.
"""
