"""The one engine every repository shares: SQLite by default (WAL, a file beside the storage folder),
PostgreSQL for clusters, migrated to the newest revision when it is opened.

SQLAlchemy's sync engine is called from worker threads (`asyncio.to_thread`), like the store:
the LoRA registry, the denoiser replicas and the CLI use it from threads too.

Times that replicas compare (heartbeats, staleness, webhook retries) are read from the database's clock
(`database_now()`), never a replica's own: one whose clock runs ahead would see live jobs as stale.

A SQLite file holds every prompt and webhook: it is made 0600 before SQLite opens it (SQLite gives
its -wal and -shm the database file's mode), and one made by an older version is narrowed at start.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, Float, create_engine, event
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

DATABASE_FILENAME = "flux-serve.db"
PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


class DatabaseNow(FunctionElement):
    """The database's clock, in seconds since the epoch (a float), evaluated in SQL."""

    type = Float()
    inherit_cache = True


def database_now() -> DatabaseNow:
    """Now by the one clock every replica shares: use it for any time another replica compares."""
    return DatabaseNow()


@compiles(DatabaseNow, "sqlite")
def _sqlite_now(_element, _compiler, **_kw) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"  # Julian day of the Unix epoch; millisecond steps


@compiles(DatabaseNow, "postgresql")
def _postgresql_now(_element, _compiler, **_kw) -> str:
    return "CAST(extract(epoch from clock_timestamp()) AS double precision)"


@compiles(DatabaseNow)
def _other_now(_element, compiler, **_kw) -> str:
    raise CompileError(
        f"flux-serve reads the time from SQLite or PostgreSQL, not {compiler.dialect.name}; "
        "set database_url to a sqlite:/// file or a postgresql:// server."
    )


def default_database_url(storage_url: str) -> str:
    """A SQLite file beside a local storage folder; for object storage, in the user's data folder.
    The folder is the service user's alone (0700), made so or narrowed if it already exists."""
    folder = Path(storage_url) if "://" not in storage_url else Path("~/.local/share/flux-serve").expanduser()
    folder.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    folder.chmod(PRIVATE_FOLDER_MODE)
    return f"sqlite:///{folder / DATABASE_FILENAME}"


def sqlite_file(engine: Engine) -> Path | None:
    """The engine's SQLite database file; None for PostgreSQL, in-memory or URI-named databases."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def make_private(path: Path) -> None:
    """Create `path` 0600 if missing (before SQLite opens it, so it is never readable by others),
    and narrow it to 0600 if it exists with a wider mode."""
    path.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
    path.chmod(PRIVATE_FILE_MODE)


def _narrow_companions(path: Path) -> None:
    """The -wal and -shm beside the database (and a rollback journal), 0600 whenever they exist:
    ones left by an older version, and new ones should SQLite ever not copy the file's mode."""
    for suffix in SQLITE_COMPANIONS:
        try:
            os.chmod(f"{path}{suffix}", PRIVATE_FILE_MODE)
        except FileNotFoundError:
            pass


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
        path = sqlite_file(engine)
        if path is not None:
            make_private(path)
            event.listen(engine, "connect", lambda _connection, _record: _narrow_companions(path))
    return engine


def open_engine(url: str) -> Engine:
    """An engine on a database migrated to the newest revision (idempotent; replicas migrate once)."""
    engine = make_engine(url)
    from serve_apps.migrations import upgrade

    upgrade(engine)
    return engine
