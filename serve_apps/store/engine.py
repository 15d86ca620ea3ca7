"""The one engine every repository shares: SQLite by default (WAL, a file beside the storage folder),
PostgreSQL for clusters, migrated to the newest revision when it is opened.

SQLAlchemy's sync engine is called from worker threads (`asyncio.to_thread`), like the store:
the LoRA registry, the denoiser replicas and the CLI use it from threads too.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event

DATABASE_FILENAME = "flux-serve.db"


def default_database_url(storage_url: str) -> str:
    """A SQLite file beside a local storage folder; for object storage, in the user's data folder."""
    folder = Path(storage_url) if "://" not in storage_url else Path("~/.local/share/flux-serve").expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / DATABASE_FILENAME}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def open_engine(url: str) -> Engine:
    """An engine on a database migrated to the newest revision (idempotent; replicas migrate once)."""
    engine = make_engine(url)
    from serve_apps.migrations import upgrade

    upgrade(engine)
    return engine
