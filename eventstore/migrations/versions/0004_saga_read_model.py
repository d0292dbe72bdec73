"""The saga read model: saga_outcomes grows into one row per saga of every type.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE saga_outcomes
            ADD COLUMN current_step text NOT NULL DEFAULT '',
            ADD COLUMN keys jsonb NOT NULL DEFAULT '{}',
            ADD COLUMN failure text,
            ADD COLUMN escalated_steps jsonb NOT NULL DEFAULT '[]';
        CREATE INDEX saga_outcomes_updated_idx ON saga_outcomes (updated_at DESC, saga_id);
        CREATE INDEX saga_outcomes_keys_idx ON saga_outcomes USING gin (keys jsonb_path_ops);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX saga_outcomes_keys_idx;
        DROP INDEX saga_outcomes_updated_idx;
        ALTER TABLE saga_outcomes
            DROP COLUMN escalated_steps,
            DROP COLUMN failure,
            DROP COLUMN keys,
            DROP COLUMN current_step;
        """
    )
