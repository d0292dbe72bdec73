"""Console: the operator audit trail (who did what from the console, and its result).

Revision ID: 0008
Revises: 0006 (re-chained onto 0007 when merged)
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


UPGRADE = """
-- One row per operator action taken in the console (dead-letter replay / skip,
-- parked-step retry / resolve / skip, cancel, test orders): who, on what, with which
-- note and result. Saga decisions are also in the saga's journal; dead letters have
-- no journal, so this is where their "who" lives.
CREATE TABLE operator_actions (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    principal text NOT NULL,
    action    text NOT NULL,
    target    text NOT NULL,
    note      text NOT NULL DEFAULT '',
    result    text NOT NULL DEFAULT ''
);
CREATE INDEX operator_actions_at_idx ON operator_actions (at DESC);
"""

DOWNGRADE = "DROP TABLE operator_actions;"


def upgrade() -> None:
    """Create the operator audit table."""
    op.execute(UPGRADE)


def downgrade() -> None:
    """Drop the operator audit table."""
    op.execute(DOWNGRADE)
