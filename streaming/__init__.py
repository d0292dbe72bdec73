"""Streaming: the relay from the event store to Kafka, Kafka plumbing, dead-letter topic.

Entry points: ``streaming.relay.run_relay`` (process), ``streaming.relay.relay_lag``
(metrics), ``streaming.cli.app`` (``sagaflow relay``).
"""
