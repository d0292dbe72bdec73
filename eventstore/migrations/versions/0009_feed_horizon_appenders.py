"""The feed's horizon is held by appending transactions only.

Until now the feed read below the oldest running transaction of the cluster
(``pg_snapshot_xmin``), so any write transaction held it back: above all the
projector's read-model batches, which run one after another under load, so events
waited for a projector batch before the relay could read them (lag p99 in the
hundreds of milliseconds).

A transaction that will never append (a projection batch, a rebuild, a dead-letter
resolution) now says so as its first statement: ``sagaflow_declare_no_append()``
takes a shared advisory lock that marks it, and refuses when the transaction has
already written (it might have appended). The feed's horizon is the oldest running
transaction that is not so marked (or the snapshot's xmax when there is none); see
``eventstore.postgres``. ``sagaflow_append`` refuses in a marked transaction, so a
marked transaction can never hide its own events.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: The advisory lock's two keys ("SAGA", 1): pg_locks shows them as classid, objid.
LOCK_CLASS, LOCK_OBJECT = 1396787009, 1

UPGRADE = rf"""
CREATE FUNCTION sagaflow_declare_no_append() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    -- Why refuse after a write: the transaction may have appended already, and its
    -- events would then sit below a horizon that no longer waits for it.
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'sagaflow_declare_no_append: the transaction has already written'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    PERFORM set_config('sagaflow.no_append', 'on', true);
    PERFORM pg_advisory_xact_lock_shared({LOCK_CLASS}, {LOCK_OBJECT});
END
$fn$;

CREATE FUNCTION sagaflow_may_append() RETURNS boolean
LANGUAGE plpgsql AS $fn$
BEGIN
    IF current_setting('sagaflow.no_append', true) = 'on' THEN
        RAISE EXCEPTION 'sagaflow_append: this transaction declared it never appends'
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    RETURN true;
END
$fn$;

CREATE OR REPLACE FUNCTION sagaflow_append(
    p_stream_id text, p_stream_type text, p_expected integer, p_epoch integer,
    p_events jsonb)
RETURNS TABLE (o_version integer, o_position bigint)
LANGUAGE sql AS $fn$
    WITH guard AS (
        SELECT sagaflow_may_append() AS ok
    ), batch AS (
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
    FROM guard, batch b, cur
    WHERE guard.ok AND (p_expected = -1 OR cur.v = p_expected)
    ORDER BY b.ord
    RETURNING version, global_position
$fn$;
"""

DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION sagaflow_append(
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
DROP FUNCTION sagaflow_may_append;
DROP FUNCTION sagaflow_declare_no_append;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
