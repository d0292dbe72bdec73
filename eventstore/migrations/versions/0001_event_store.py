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

-- One round trip per append: idempotency check, expected-version check, insert.
-- p_events is a JSON array of {event_id, event_type, schema_version, data, metadata}:
-- one parameter, so the client sends one string instead of five typed arrays.
CREATE FUNCTION sagaflow_append(
    p_stream_id text, p_stream_type text, p_expected integer, p_epoch integer,
    p_events jsonb)
RETURNS TABLE (o_version integer, o_position bigint, o_duplicate boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    n           integer := jsonb_array_length(p_events);
    p_event_ids uuid[] := ARRAY(SELECT (e ->> 'event_id')::uuid
                                FROM jsonb_array_elements(p_events) AS e);
    v_known     integer;
    v_new       integer;
    v_actual    integer;
BEGIN
    SELECT count(*) INTO v_known FROM events WHERE event_id = ANY (p_event_ids);
    IF v_known = n THEN
        -- A retried append: report what the first one wrote, write nothing.
        RETURN QUERY SELECT e.version, e.global_position, true FROM events e
            WHERE e.event_id = ANY (p_event_ids) ORDER BY e.version;
        RETURN;
    ELSIF v_known > 0 THEN
        RAISE EXCEPTION 'stream %: % of % event ids are already stored', p_stream_id, v_known, n
            USING ERRCODE = 'SF002';
    END IF;

    -- The expected-version check. Its write is the insert below: the unique index
    -- on (stream_id, version) makes a concurrent append of the same versions wait
    -- for the first one and then fail, so one append wins and the loser writes
    -- nothing. Why this keeps each stream's events in version order in the feed
    -- (ordered by transaction id): an append can only take version k+1 after it
    -- has read version k committed, and a transaction id is assigned at the first
    -- write, which comes after that read.
    SELECT coalesce(max(version), 0) INTO v_actual FROM events WHERE stream_id = p_stream_id;
    IF p_expected <> -1 AND v_actual <> p_expected THEN
        RAISE EXCEPTION 'stream % is at version %', p_stream_id, v_actual
            USING ERRCODE = 'SF001', DETAIL = v_actual::text;
    END IF;
    v_new := v_actual + n;

    RETURN QUERY
    INSERT INTO events (epoch, event_id, stream_id, stream_type, version, event_type,
                        schema_version, data, metadata)
    SELECT p_epoch, (u.e ->> 'event_id')::uuid, p_stream_id, p_stream_type,
           v_new - n + u.ord::integer, u.e ->> 'event_type',
           (u.e ->> 'schema_version')::integer, u.e -> 'data', u.e -> 'metadata'
    FROM jsonb_array_elements(p_events) WITH ORDINALITY AS u(e, ord)
    ORDER BY u.ord
    RETURNING version, global_position, false;
END
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
