"""API: Idempotency-Key records for POST /orders.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE api_idempotency_keys (
            key          text PRIMARY KEY,
            request_hash text NOT NULL,
            resource_id  text NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE api_idempotency_keys")
