"""Alembic migrations of the job database, run at start by every replica (idempotent, serialised)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

HERE = Path(__file__).parent
MIGRATION_LOCK_ID = 7_318_201  # a PostgreSQL advisory lock, so replicas starting together migrate once


def upgrade(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
