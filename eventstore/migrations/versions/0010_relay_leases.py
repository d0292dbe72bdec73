"""Relay leases: one publishing relay per destination, fenced by an epoch.

Any number of relays may run; the one holding a session advisory lock on its
destination (a Kafka topic, a RabbitMQ exchange) publishes, the others wait. The
lock says who may publish *now*; this row says who did last and carries the
fencing token: ``epoch`` grows by one on every acquisition, and the relay's
checkpoint write succeeds only while the row still holds the writer's epoch
(``streaming.relay.save_checkpoint``), so a relay that lost its lock without
noticing yet cannot move the checkpoint. ``relay_name`` records which checkpoint
owns the destination: a relay started with another checkpoint name for the same
destination is refused instead of publishing a second copy of the stream.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


UPGRADE = """
CREATE TABLE relay_leases (
    destination text PRIMARY KEY,
    relay_name  text NOT NULL,
    epoch       bigint NOT NULL,
    holder      text NOT NULL,
    -- acquisitions by a relay other than the previous holder
    takeovers   bigint NOT NULL DEFAULT 0,
    acquired_at timestamptz NOT NULL DEFAULT now()
);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP TABLE relay_leases;")
