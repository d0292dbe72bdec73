"""Run the event store's Alembic migrations from code (every process calls this at start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def sqlalchemy_url(database_url: str) -> str:
    """``postgresql://`` → ``postgresql+psycopg://`` (SQLAlchemy's psycopg 3 dialect)."""
    if database_url.startswith("postgresql://"):
        return "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    return database_url


def psycopg_url(database_url: str) -> str:
    """The inverse of ``sqlalchemy_url``: a libpq connection URL."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at our migrations and the given database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (safe to call from several processes at once)."""
    command.upgrade(alembic_config(database_url), revision)
