"""Which database holds the books, and bringing its schema up to date (Alembic, at start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

if TYPE_CHECKING:
    from routelead.settings import Settings

DEFAULT_SQLITE_PATH = "./routelead.db"
_MIGRATIONS = str(Path(__file__).resolve().parent / "migrations")


def database_url(settings: Settings) -> str:
    """`DATABASE_URL` (PostgreSQL) when set, else a SQLite file (`ROUTELEAD_DB`, ./routelead.db)."""
    url = settings.database_url.strip()
    if url:
        return async_url(url)
    path = settings.db_path.strip() or DEFAULT_SQLITE_PATH
    return f"sqlite+aiosqlite:///{path}"


def async_url(url: str) -> str:
    """Accept the usual spellings (postgres://, postgresql://) and pick the async driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(f"unsupported database {backend!r}: use postgresql://… or sqlite:///path")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str) -> AsyncEngine:
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: after a database restart, stale pooled connections are replaced, not handed out.
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def sqlite_writer(engine: AsyncEngine) -> sa.Engine | None:
    """For a SQLite file: a plain (pysqlite) engine on the same file, for the write path to drive
    from one worker thread. A write through aiosqlite hops threads for every statement; the whole
    transaction in one hop costs about half the CPU (benchmarks/README.md). None for PostgreSQL,
    whose asyncpg driver is natively async, and for in-memory SQLite (one database per engine)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    sync = sa.create_engine(url.set(drivername="sqlite"), pool_size=1, max_overflow=0)
    event.listen(sync, "connect", _sqlite_pragmas)
    return sync


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    # WAL: readers never block the writer. FULL: a committed lead survives power loss, not just a crash.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", _MIGRATIONS)
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory(_MIGRATIONS).get_current_head()
    assert head is not None
    return head


@contextlib.asynccontextmanager
async def _sqlite_migration_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """SQLite has no advisory lock: processes starting together on a fresh file (`serve --workers`,
    replicas on one host) would each create the tables. A lock file beside the database lets one
    migrate while the others wait, then find nothing to do."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return
    fd = os.open(f"{path}.migrate-lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


async def migrate(engine: AsyncEngine) -> str:
    """Apply every pending migration; returns the revision the database is now at."""

    def upgrade(connection: Connection) -> str:
        if connection.dialect.name == "postgresql":
            # Pods starting together: one migrates, the others wait and then find nothing to do.
            connection.execute(text("SELECT pg_advisory_xact_lock(7011)"))
        command.upgrade(_alembic_config(connection), "head")
        return MigrationContext.configure(connection).get_current_revision() or ""

    async with _sqlite_migration_lock(engine), engine.begin() as conn:
        return await conn.run_sync(upgrade)
