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
            ADD COLUMN escalated_steps jsonb NOT NULL DEFAULT '[]',
            ADD COLUMN parked jsonb NOT NULL DEFAULT '[]';
        -- The inbox lists {step, phase, error, parked_at, escalated} per parked step;
        -- rows folded before this revision only had the names.
        UPDATE saga_outcomes
           SET parked = (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'step', s, 'phase', 'compensation', 'error', coalesce(reason, ''),
                   'parked_at', to_jsonb(updated_at)#>>'{}', 'escalated', false)), '[]')
                 FROM jsonb_array_elements_text(parked_steps) AS s),
               status = 'compensation_parked'
         WHERE status = 'parked';
        CREATE INDEX saga_outcomes_parked_idx ON saga_outcomes (saga_type)
            WHERE status = 'compensation_parked';
        CREATE INDEX saga_outcomes_updated_idx ON saga_outcomes (updated_at DESC, saga_id);
        CREATE INDEX saga_outcomes_keys_idx ON saga_outcomes USING gin (keys jsonb_path_ops);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        UPDATE saga_outcomes SET status = 'parked' WHERE status = 'compensation_parked';
        DROP INDEX saga_outcomes_parked_idx;
        DROP INDEX saga_outcomes_keys_idx;
        DROP INDEX saga_outcomes_updated_idx;
        ALTER TABLE saga_outcomes
            DROP COLUMN parked,
            DROP COLUMN escalated_steps,
            DROP COLUMN failure,
            DROP COLUMN keys,
            DROP COLUMN current_step;
        """
    )
