"""Dead letters and parked messages speak the store's words: a position token.

The columns ``topic``, ``partition`` and ``"offset"`` held the parts of the
transport-neutral position (``streaming.transport.Position``: source, lane, ordinal),
whatever the transport: a RabbitMQ shard queue, a feed cursor's global position.
They become one ``position`` column holding the token ``<source>/<lane>@<ordinal>``
(``Position.token()``), beside the stream id and version the rows already carry.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("dead_letters", "parked_messages")


def upgrade() -> None:
    for table in TABLES:
        op.execute(
            f"""
            ALTER TABLE {table} ADD COLUMN position text;
            UPDATE {table} SET position = topic || '/' || partition || '@' || "offset";
            ALTER TABLE {table} ALTER COLUMN position SET NOT NULL;
            ALTER TABLE {table} DROP CONSTRAINT {table}_source_key;
            ALTER TABLE {table} DROP COLUMN topic, DROP COLUMN partition, DROP COLUMN "offset";
            ALTER TABLE {table} ADD CONSTRAINT {table}_position_key UNIQUE (consumer, position);
            """
        )


def downgrade() -> None:
    # Why split at the last '@' and the last '/': a source (queue name) may hold '/'
    # or '@', the lane and ordinal are digits.
    for table in TABLES:
        op.execute(
            f"""
            ALTER TABLE {table} ADD COLUMN topic text, ADD COLUMN partition integer,
                ADD COLUMN "offset" bigint;
            UPDATE {table} SET
                topic = substring(position FROM '^(.*)/[0-9]+@-?[0-9]+$'),
                partition = substring(position FROM '/([0-9]+)@-?[0-9]+$')::integer,
                "offset" = substring(position FROM '@(-?[0-9]+)$')::bigint;
            ALTER TABLE {table} ALTER COLUMN topic SET NOT NULL,
                ALTER COLUMN partition SET NOT NULL, ALTER COLUMN "offset" SET NOT NULL;
            ALTER TABLE {table} DROP CONSTRAINT {table}_position_key;
            ALTER TABLE {table} DROP COLUMN position;
            ALTER TABLE {table} ADD CONSTRAINT {table}_source_key
                UNIQUE (consumer, topic, partition, "offset");
            """
        )
