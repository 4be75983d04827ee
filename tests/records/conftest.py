"""Both backends for one shared suite: a SQLite file, and a real PostgreSQL (throwaway or DATABASE_URL)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from routelead.records.ledger import Ledger

from tests.servers import PgServer, RedisServer


class ExternalPg:
    """The PostgreSQL named by DATABASE_URL: one scratch database per test, created and dropped."""

    def __init__(self, url: str) -> None:
        self.admin_url = url.replace("postgresql+asyncpg://", "postgresql://")

    def url(self, database: str) -> str:
        head, _, _ = self.admin_url.rpartition("/")
        return f"{head}/{database}"


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer | ExternalPg]:
    if os.environ.get("DATABASE_URL"):
        yield ExternalPg(os.environ["DATABASE_URL"])
        return
    server = PgServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@dataclass
class Backend:
    name: str
    url: str
    # Make the database unavailable, and bring it back (same data).
    down: Callable[[], Awaitable[None]]
    up: Callable[[], Awaitable[None]]
    ledgers: list[Ledger] = field(default_factory=list)

    async def ledger(self) -> Ledger:
        ledger = await Ledger.open(self.url)
        self.ledgers.append(ledger)
        return ledger


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, pg: PgServer | ExternalPg
) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "ledger.db"
        lock: list[sqlite3.Connection] = []

        async def down() -> None:
            # Another process holding the write lock: to us, the database refuses every write.
            con = sqlite3.connect(path, isolation_level=None, timeout=0)
            con.execute("BEGIN EXCLUSIVE")
            lock.append(con)

        async def up() -> None:
            while lock:
                con = lock.pop()
                con.execute("ROLLBACK")
                con.close()

        b = Backend("sqlite", f"sqlite:///{path}", down, up)
    else:
        name = f"rl_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(pg.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        if isinstance(pg, PgServer):
            server = pg

            async def stop() -> None:
                await asyncio.to_thread(server.stop)

            async def start() -> None:
                await asyncio.to_thread(server.start)

            b = Backend("postgresql", pg.url(name), stop, start)
        else:
            b = Backend("postgresql", pg.url(name), _refuse(pg, name, False), _refuse(pg, name, True))
    yield b
    await b.up()
    for ledger in b.ledgers:
        await ledger.close()
    if b.name == "postgresql":
        admin = await asyncpg.connect(pg.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _refuse(pg: ExternalPg, name: str, allow: bool) -> Callable[[], Awaitable[None]]:
    """On a server we may not stop: refuse connections to the test database and cut the open ones."""

    async def go() -> None:
        admin = await asyncpg.connect(pg.admin_url)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
            if not allow:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
                )
        finally:
            await admin.close()

    return go
