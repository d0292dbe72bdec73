"""Alembic environment for sagaflow's event store (run through eventstore.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

# Why: several processes (api, worker, relay, projector) migrate at start-up; the
# advisory lock makes the second one wait and then find nothing left to do.
MIGRATION_LOCK = 7_240_001

url = context.config.get_main_option("sqlalchemy.url")
assert url, "sqlalchemy.url must be set"
engine = create_engine(url)
with engine.connect() as connection:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
    connection.commit()
    try:
        context.configure(connection=connection, version_table="sagaflow_schema_version")
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
        connection.commit()
engine.dispose()
