"""Projections: read models, analytics, checkpoints, dead letters and parked messages.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


UPGRADE = r"""
-- The relay's position in the store's feed: the whole (epoch, tx_id, position)
-- cursor, because a position alone would skip events whose transaction commits late.
CREATE TABLE relay_checkpoints (
    relay_name  text PRIMARY KEY,
    epoch       integer NOT NULL,
    tx_id       bigint NOT NULL,
    position    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Kafka mode: the next offset to read per partition, written in the same
-- transaction as the read-model change it follows.
CREATE TABLE projection_offsets (
    consumer    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    -- when the last applied event was recorded (lag in seconds, an upper bound)
    last_event_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

-- Embedded mode: the feed cursor, same one-transaction rule.
CREATE TABLE projection_feed_checkpoints (
    consumer    text PRIMARY KEY,
    epoch       integer NOT NULL,
    tx_id       bigint NOT NULL,
    position    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Per read model, the last applied version of each stream: duplicates (relay
-- re-publishes) are skipped, and a rebuilt model swaps its own watermarks in.
CREATE TABLE projection_watermarks (
    projection  text NOT NULL,
    stream_id   text NOT NULL,
    version     integer NOT NULL,
    PRIMARY KEY (projection, stream_id)
);

CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    stream_id   text,
    event_id    uuid,
    version     integer,
    payload     bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '[]',
    handler     text NOT NULL,
    error       text NOT NULL,
    attempts    integer NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed', 'skipped')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    CONSTRAINT dead_letters_source_key UNIQUE (consumer, topic, partition, "offset")
);
CREATE INDEX dead_letters_open_idx ON dead_letters (consumer, stream_id) WHERE status = 'open';

-- Later messages of a stream with an open dead letter, held back in arrival order.
CREATE TABLE parked_messages (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer    text NOT NULL,
    stream_id   text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    payload     bytea NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT parked_messages_source_key UNIQUE (consumer, topic, partition, "offset")
);
CREATE INDEX parked_messages_stream_idx ON parked_messages (consumer, stream_id, seq);

-- Read models -------------------------------------------------------------------------

CREATE TABLE order_summary (
    order_id        text PRIMARY KEY,
    customer_id     text NOT NULL,
    status          text NOT NULL,
    lines           jsonb NOT NULL DEFAULT '[]',
    total_cents     bigint NOT NULL DEFAULT 0,
    paid_cents      bigint NOT NULL DEFAULT 0,
    payment_id      text,
    tracking_number text,
    carrier         text,
    cancel_reason   text,
    timeline        jsonb NOT NULL DEFAULT '{}',
    version         integer NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE TABLE customer_orders (
    customer_id text NOT NULL,
    order_id    text NOT NULL,
    status      text NOT NULL,
    total_cents bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, order_id)
);
CREATE INDEX customer_orders_order_idx ON customer_orders (order_id);

CREATE TABLE inventory_levels (
    sku              text PRIMARY KEY,
    name             text,
    unit_price_cents bigint,
    available        bigint NOT NULL DEFAULT 0,
    reserved         bigint NOT NULL DEFAULT 0,
    sold             bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL
);

CREATE TABLE daily_sales (
    day            date PRIMARY KEY,
    orders         bigint NOT NULL DEFAULT 0,
    revenue_cents  bigint NOT NULL DEFAULT 0,
    cancellations  bigint NOT NULL DEFAULT 0,
    refunds        bigint NOT NULL DEFAULT 0,
    refunded_cents bigint NOT NULL DEFAULT 0
);

CREATE TABLE product_sales (
    sku           text PRIMARY KEY,
    name          text NOT NULL,
    units         bigint NOT NULL DEFAULT 0,
    revenue_cents bigint NOT NULL DEFAULT 0
);

-- product_sales' own memory of each order's lines (a read model rebuilds alone).
CREATE TABLE product_sales_orders (
    order_id  text PRIMARY KEY,
    lines     jsonb NOT NULL DEFAULT '[]',
    submitted boolean NOT NULL DEFAULT false
);

CREATE TABLE saga_outcomes (
    saga_id      text PRIMARY KEY,
    saga_type    text NOT NULL,
    order_id     text,
    status       text NOT NULL,
    reason       text,
    parked_steps jsonb NOT NULL DEFAULT '[]',
    started_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX saga_outcomes_status_idx ON saga_outcomes (saga_type, status);
"""

DOWNGRADE = """
DROP TABLE saga_outcomes;
DROP TABLE product_sales_orders;
DROP TABLE product_sales;
DROP TABLE daily_sales;
DROP TABLE inventory_levels;
DROP TABLE customer_orders;
DROP TABLE order_summary;
DROP TABLE parked_messages;
DROP TABLE dead_letters;
DROP TABLE projection_watermarks;
DROP TABLE projection_feed_checkpoints;
DROP TABLE projection_offsets;
DROP TABLE relay_checkpoints;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
