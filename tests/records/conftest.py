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
import grpc
import pytest
import yaml
from routelead.api.admin import AdminServicer
from routelead.api.server import Service
from routelead.api.stats import StatsServicer
from routelead.records.configstore import ConfigStore, ConfigWatcher, compile_version
from routelead.records.ledger import Ledger
from routelead.records.reports import Reports
from routelead.v1 import admin_pb2_grpc as apb_grpc
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, buyer, document
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


# A replica of the service with the books and the admin token (Admin and Stats), seeded with two
# bidding buyers: a (whose post headers hold an env reference and a literal secret) and b.
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
REPLICA_ENV = {"A_KEY": "key-from-env"}
ADMIN_AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
LITERAL_SECRET = "s3cr3t-literal-value"


@dataclass
class Replica:
    service: Service
    ledger: Ledger
    routing: pb_grpc.RouteLeadStub
    admin: apb_grpc.AdminStub
    n: int = 0

    async def route(self) -> pb.RouteLeadResponse:
        self.n += 1
        fields = {**GOOD_LEAD, "email": f"r{id(self)}-{self.n}@example.com"}
        request = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=fields)
        reply: pb.RouteLeadResponse = await self.routing.RouteLead(request, timeout=10)
        return reply


Start = Callable[[], Awaitable[Replica]]


def replica_document(buyers: BuyerServer) -> str:
    a = buyer(
        buyers.url,
        "a",
        post={"headers": {"X-Key": "${A_KEY}", "X-Literal": LITERAL_SECRET}, "timeout_ms": 700},
    )
    return yaml.safe_dump(document([a, buyer(buyers.url, "b")], dedupe=None))


@pytest.fixture
async def replicas(backend: Backend, buyers: BuyerServer) -> AsyncIterator[Start]:
    buyers.on("a", ping=bid("40.00"), post=accept("A-1"))
    buyers.on("b", ping=bid("30.00"), post=accept("B-1"))
    text = replica_document(buyers)
    running: list[tuple[Service, grpc.aio.Channel, asyncio.Event, asyncio.Task[None]]] = []

    async def start() -> Replica:
        ledger = await backend.ledger()
        store = ConfigStore(ledger.engine)
        live = await store.seed(text, REPLICA_ENV)
        # What `serve` runs with an admin token: Admin and Stats beside the routing API.
        admin = AdminServicer(store, ADMIN_TOKEN, REPLICA_ENV)
        stats = StatsServicer(Reports(ledger.engine), ADMIN_TOKEN)
        service = Service(
            compile_version(live, REPLICA_ENV), ledger=ledger, extra_services=[admin.register, stats.register]
        )
        await service.start()
        stop = asyncio.Event()
        task = asyncio.create_task(
            ConfigWatcher(store, service.use_config, live.version, env=REPLICA_ENV).run(stop)
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        running.append((service, channel, stop, task))
        return Replica(service, ledger, pb_grpc.RouteLeadStub(channel), apb_grpc.AdminStub(channel))

    yield start
    for service, channel, stop, task in running:
        stop.set()
        await task
        await channel.close()
        await service.stop(grace=0.5)
