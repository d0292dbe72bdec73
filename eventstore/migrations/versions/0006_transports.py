"""Transports: delayed-retry holds of streams, bootstrapped read models.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


UPGRADE = """
-- A stream whose failing message waits in the transport's retry queue (RabbitMQ):
-- its later messages are parked until that version applies or is dead-lettered.
CREATE TABLE projection_retries (
    consumer   text NOT NULL,
    stream_id  text NOT NULL,
    version    integer NOT NULL,
    attempts   integer NOT NULL,
    error      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream_id)
);

-- Read models that have caught up from the event store once; a read model missing
-- here (added later, or its rows lost) bootstraps from the store before it follows
-- the transport.
-- Running totals the API's /metrics reads (the projector is another process):
-- gaps_healed (gaps closed from the store), gap_events_healed (events read for them).
CREATE TABLE projection_counters (
    name  text PRIMARY KEY,
    value bigint NOT NULL DEFAULT 0
);

CREATE TABLE projection_bootstraps (
    projection   text PRIMARY KEY,
    completed_at timestamptz NOT NULL DEFAULT now()
);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(
        "DROP TABLE projection_bootstraps; DROP TABLE projection_counters; "
        "DROP TABLE projection_retries;"
    )
