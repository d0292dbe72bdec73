"""Keyed reads: one sub-entity's events in a stream, without reading the stream.

An aggregate whose state would grow with its sub-entities (a SKU's open stock
reservations, its restocked returns) keeps only totals in its snapshot and reads the
events of the one sub-entity a command is about on demand
(``EventStore.read_stream_keyed``). These expression indexes make that read a few
index probes whatever the stream's length. They index the payload itself, so events
written before this migration (or by a worker of an earlier release during a rolling
upgrade) are found as well: nothing is backfilled and the append is unchanged. Partial
(``IS NOT NULL``): events without the field cost the index nothing; PostgreSQL proves
the predicate from the query's ``data->>'field' = value``.

The build takes a lock that holds appends back while it reads the events table (every
process migrates at start, under one advisory lock, in a transaction, where
``CONCURRENTLY`` cannot run). On a large production table build them by hand first,
``CREATE INDEX CONCURRENTLY`` with the same names and definitions: ``IF NOT EXISTS``
then leaves them be.

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: payload field -> index name; ``PostgresEventStore.read_stream_keyed`` reads only these.
KEYED_FIELDS = {
    "reservation_id": "events_reservation_id_idx",
    "return_id": "events_return_id_idx",
}


def upgrade() -> None:
    for field, index in KEYED_FIELDS.items():
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {index} ON events (stream_id, (data ->> '{field}'), "
            f"version) WHERE (data ->> '{field}') IS NOT NULL"
        )


def downgrade() -> None:
    for index in KEYED_FIELDS.values():
        op.execute(f"DROP INDEX IF EXISTS {index}")
