"""Returns: the return_summary read model and the daily_returns analytics.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE return_summary (
            return_id      text PRIMARY KEY,
            order_id       text NOT NULL,
            customer_id    text NOT NULL,
            status         text NOT NULL,
            reason         text NOT NULL,
            lines          jsonb NOT NULL DEFAULT '[]',
            total_cents    bigint NOT NULL DEFAULT 0,
            refunded_cents bigint NOT NULL DEFAULT 0,
            close_reason   text,
            timeline       jsonb NOT NULL DEFAULT '{}',
            version        integer NOT NULL,
            updated_at     timestamptz NOT NULL
        );
        CREATE INDEX return_summary_order_idx ON return_summary (order_id);
        CREATE TABLE daily_returns (
            day            date PRIMARY KEY,
            opened         bigint NOT NULL DEFAULT 0,
            units          bigint NOT NULL DEFAULT 0,
            expired        bigint NOT NULL DEFAULT 0,
            cancelled      bigint NOT NULL DEFAULT 0,
            refunded       bigint NOT NULL DEFAULT 0,
            refunded_cents bigint NOT NULL DEFAULT 0
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE daily_returns; DROP TABLE return_summary;")
