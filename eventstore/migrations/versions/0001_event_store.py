"""Event store: events with a transaction-id feed, snapshots, epochs.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


UPGRADE = r"""
-- Epochs: transaction ids restart after a dump and restore into a new cluster; the
-- feed orders by (epoch, tx_id, global_position) so a new epoch sorts after all
-- earlier events.
CREATE TABLE store_epochs (
    epoch          integer PRIMARY KEY,
    started_at     timestamptz NOT NULL DEFAULT now(),
    first_position bigint NOT NULL
);
INSERT INTO store_epochs (epoch, first_position) VALUES (1, 0);

CREATE TABLE events (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    epoch           integer NOT NULL,
    -- The writing transaction: the feed reads only below the oldest running one.
    tx_id           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid NOT NULL,
    stream_id       text NOT NULL,
    stream_type     text NOT NULL,
    version         integer NOT NULL,
    event_type      text NOT NULL,
    schema_version  integer NOT NULL,
    data            jsonb NOT NULL,
    metadata        jsonb NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);
CREATE INDEX events_feed_idx ON events (epoch, tx_id, global_position);

CREATE TABLE snapshots (
    stream_id   text PRIMARY KEY,
    stream_type text NOT NULL,
    version     integer NOT NULL,
    schema      integer NOT NULL,
    state       jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- One statement per append: the expected-version check and the insert together.
-- p_events is a JSON array of {event_id, event_type, schema_version, data, metadata}:
-- one parameter, so the client sends one string instead of five typed arrays.
--
-- Returns the rows written, or no row when the stream is not at p_expected
-- (0 = no stream yet, -1 = any version). An event id already stored violates
-- events_event_id_key: the caller then reports the earlier append as a duplicate.
--
-- Why the unique index is the version check: a concurrent append of the same
-- versions waits for the first one and then fails, so one append wins and the loser
-- writes nothing. Why each stream's events stay in version order in the feed
-- (ordered by transaction id): an append can only take version k+1 after it has read
-- version k committed, and a transaction id is assigned at its first write, which
-- comes after that read.
CREATE FUNCTION sagaflow_append(
    p_stream_id text, p_stream_type text, p_expected integer, p_epoch integer,
    p_events jsonb)
RETURNS TABLE (o_version integer, o_position bigint)
LANGUAGE sql AS $fn$
    WITH batch AS (
        SELECT (u.e ->> 'event_id')::uuid AS event_id, u.e ->> 'event_type' AS event_type,
               (u.e ->> 'schema_version')::integer AS schema_version,
               u.e -> 'data' AS data, u.e -> 'metadata' AS metadata, u.ord
        FROM jsonb_array_elements(p_events) WITH ORDINALITY AS u(e, ord)
    ), cur AS (
        SELECT coalesce(max(version), 0) AS v FROM events WHERE stream_id = p_stream_id
    )
    INSERT INTO events (epoch, event_id, stream_id, stream_type, version, event_type,
                        schema_version, data, metadata)
    SELECT p_epoch, b.event_id, p_stream_id, p_stream_type, cur.v + b.ord::integer,
           b.event_type, b.schema_version, b.data, b.metadata
    FROM batch b, cur
    WHERE p_expected = -1 OR cur.v = p_expected
    ORDER BY b.ord
    RETURNING version, global_position
$fn$;
"""

DOWNGRADE = """
DROP FUNCTION sagaflow_append;
DROP TABLE snapshots;
DROP TABLE events;
DROP TABLE store_epochs;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
