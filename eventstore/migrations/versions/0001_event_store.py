"""Event store: streams, events with a transaction-id feed, snapshots, epochs.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


UPGRADE = r"""
CREATE TABLE streams (
    stream_id   text PRIMARY KEY,
    stream_type text NOT NULL,
    version     integer NOT NULL CHECK (version > 0)
);

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
CREATE FUNCTION sagaflow_append(
    p_stream_id text, p_stream_type text, p_expected integer, p_epoch integer,
    p_event_ids uuid[], p_types text[], p_schema_versions integer[],
    p_data jsonb[], p_metadata jsonb[])
RETURNS TABLE (o_version integer, o_position bigint, o_duplicate boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    n        integer := cardinality(p_event_ids);
    v_known  integer;
    v_new    integer;
    v_actual integer;
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

    -- Why this is the first write: it takes the stream row's lock, so concurrent
    -- appends to one stream queue here, and the winner's events get the smaller
    -- transaction id: the feed (ordered by transaction id) then shows each
    -- stream's events in version order. Appends to other streams do not wait.
    IF p_expected = 0 THEN
        INSERT INTO streams VALUES (p_stream_id, p_stream_type, n)
            ON CONFLICT (stream_id) DO NOTHING;
        IF NOT FOUND THEN
            SELECT version INTO v_actual FROM streams WHERE stream_id = p_stream_id;
            RAISE EXCEPTION 'stream % exists', p_stream_id
                USING ERRCODE = 'SF001', DETAIL = coalesce(v_actual, 0)::text;
        END IF;
        v_new := n;
    ELSIF p_expected = -1 THEN
        INSERT INTO streams VALUES (p_stream_id, p_stream_type, n)
            ON CONFLICT (stream_id) DO UPDATE SET version = streams.version + n
            RETURNING version INTO v_new;
    ELSE
        UPDATE streams SET version = version + n
            WHERE stream_id = p_stream_id AND version = p_expected
            RETURNING version INTO v_new;
        IF NOT FOUND THEN
            SELECT version INTO v_actual FROM streams WHERE stream_id = p_stream_id;
            RAISE EXCEPTION 'stream % is elsewhere', p_stream_id
                USING ERRCODE = 'SF001', DETAIL = coalesce(v_actual, 0)::text;
        END IF;
    END IF;

    RETURN QUERY
    INSERT INTO events (epoch, event_id, stream_id, stream_type, version, event_type,
                        schema_version, data, metadata)
    SELECT p_epoch, u.eid, p_stream_id, p_stream_type, v_new - n + u.ord::integer,
           u.et, u.sv, u.d, u.m
    FROM unnest(p_event_ids, p_types, p_schema_versions, p_data, p_metadata)
         WITH ORDINALITY AS u(eid, et, sv, d, m, ord)
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
DROP TABLE streams;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
