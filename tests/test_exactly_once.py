"""Exactly once, always booked: real `routelead serve` processes killed and broken for real.

Each test drives real service processes over gRPC against real aiohttp buyers that record every
post, breaks something (SIGKILL at a chosen step of a lead, Redis killed and restarted, the
SQLite file locked, PostgreSQL connections cut), retries every lead_id, runs the documented
reconciliation (`routelead sink` for the Redis outbox; `routelead settle` for open reservations;
`routelead open-posts` + `routelead settle-sale` for posts whose outcome the books do not know,
each settled by asking the buyer what it received), and then checks the pass rule:

- no exclusive lead reached two buyers, and no buyer received one lead twice;
- every post a buyer received (they all accept) is a `sold` sale on the books, with its revenue
  entry at the bid, and no sale is booked that no buyer received;
- no lead bought by a buyer is on the books as DUPLICATE or UNSOLD.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import grpc
import orjson
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
import yaml
from aiohttp import web
from mirakuru.exceptions import ProcessFinishedWithError
from routelead.cli import main as routelead
from routelead.records.ledger import Ledger
from routelead.records.schema import entries, leads, sales
from routelead.records.sink import OutboxSink
from routelead.state.redis import connect
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import Behaviour, BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, buyer, document
from tests.records.conftest import ExternalPg
from tests.servers import PgServer, free_port, wait_answering
from tests.state.conftest import SECRET, RedisProcess, start_redis

ROOT = Path(__file__).resolve().parents[1]
BIDS = {"a": Decimal("40.00"), "b": Decimal("30.00")}
CALL_S = 5.0  # the client's bound on one call: far past the flow's 750 ms deadline


# --- the pieces: service processes, books, buyers ------------------------------------------------


class Serve:
    """One `routelead serve` process (one worker) on its own port."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "routelead.cli", "serve", "--config", str(config)]
        argv += ["--listen", f"127.0.0.1:{self.port}", "--log-level", "WARNING"]
        self.proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    async def ready(self) -> None:
        await wait_answering(self.port, self.proc)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)
        self._close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self.proc.stderr:
            self.proc.stderr.close()


@dataclass
class Books:
    """The database the services book into, and how to lock it as another process would."""

    kind: str
    url: str
    env: dict[str, str]
    _sqlite: list[sqlite3.Connection] = field(default_factory=list)
    _pg: list[asyncpg.Connection] = field(default_factory=list)

    async def lock(self) -> None:
        """Writes to the books block until `unlock` (a long transaction elsewhere)."""
        if self.kind == "sqlite":
            con = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None, timeout=5)
            con.execute("BEGIN EXCLUSIVE")
            self._sqlite.append(con)
        else:
            con = await asyncpg.connect(self.url)
            await con.execute("BEGIN")
            await con.execute("LOCK TABLE leads, intents IN ACCESS EXCLUSIVE MODE")
            self._pg.append(con)

    async def unlock(self) -> None:
        while self._sqlite:
            con = self._sqlite.pop()
            con.execute("ROLLBACK")
            con.close()
        while self._pg:
            pg_con = self._pg.pop()
            await pg_con.execute("ROLLBACK")
            await pg_con.close()


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer | ExternalPg]:
    if os.environ.get("DATABASE_URL"):
        yield ExternalPg(os.environ["DATABASE_URL"])
        return
    server = PgServer()
    yield server
    server.close()


@pytest.fixture
async def make_books(
    tmp_path: Path, pg: PgServer | ExternalPg
) -> AsyncIterator[Callable[[str], Awaitable[Books]]]:
    made: list[Books] = []

    async def go(kind: str) -> Books:
        if kind == "sqlite":
            path = tmp_path / f"books-{len(made)}.db"
            books = Books(kind, f"sqlite:///{path}", {"DATABASE_URL": "", "ROUTELEAD_DB": str(path)})
        else:
            name = f"rl_{uuid.uuid4().hex[:12]}"
            admin = await asyncpg.connect(pg.admin_url)
            try:
                await admin.execute(f'CREATE DATABASE "{name}"')
            finally:
                await admin.close()
            books = Books(kind, pg.url(name), {"DATABASE_URL": pg.url(name)})
        made.append(books)
        return books

    yield go
    for books in made:
        await books.unlock()


@pytest.fixture
def redis_procs() -> Iterator[list[RedisProcess]]:
    started: list[RedisProcess] = []
    yield started
    for proc in started:
        with contextlib.suppress(Exception):
            proc.executor.stop()


def service_env(books: Books, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ROUTELEAD_REDIS_URL")}
    env.update(books.env, ROUTELEAD_LOG_LEVEL="WARNING", ROUTELEAD_DEDUPE_KEY=SECRET.decode())
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def config_file(tmp_path: Path, buyers: BuyerServer) -> Path:
    """Two bidding buyers, one exclusive sale per lead (a wins at 40.00, b bids 30.00)."""
    doc = document([buyer(buyers.url, "a"), buyer(buyers.url, "b")], dedupe=None)
    path = tmp_path / "flows.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def fields(tag: str) -> dict[str, str]:
    """A lead whose zip (in the ping and in the post) tells the buyer server which lead it is."""
    return {**GOOD_LEAD, "zip": tag, "email": f"l{tag}@example.com"}


def request(lead_id: str, tag: str) -> pb.RouteLeadRequest:
    return pb.RouteLeadRequest(lead_id=lead_id, flow="solar", source_id="src-1", fields=fields(tag))


async def zip_of(req: web.Request) -> str:
    return str(orjson.loads(await req.read()).get("zip", ""))


def per_lead(special: dict[str, Behaviour], usual: Behaviour) -> Behaviour:
    async def handler(req: web.Request) -> web.StreamResponse:
        return await special.get(await zip_of(req), usual)(req)

    return handler


# --- the truth, and the pass rule ---------------------------------------------------------------


@dataclass
class Truth:
    posts: Counter[tuple[str, str]]  # (lead tag, buyer) → posts the buyer received
    sold: dict[tuple[str, str], Decimal]  # (lead_id, buyer) → booked price, settlement sold
    revenue: dict[tuple[str, str], Decimal]  # (lead_id, buyer) → revenue entries
    outcomes: dict[str, str]  # lead_id → outcome on the books


async def truth(books: Books, buyers: BuyerServer) -> Truth:
    ledger = await Ledger.open(books.url)
    try:
        async with ledger.engine.connect() as conn:
            sold = {
                (r.lead_id, r.buyer_id): r.price
                for r in await conn.execute(sa.select(sales).where(sales.c.settlement == "sold"))
            }
            revenue: dict[tuple[str, str], Decimal] = {}
            for r in await conn.execute(sa.select(entries).where(entries.c.kind == "revenue")):
                revenue[(r.lead_id, r.buyer_id)] = revenue.get((r.lead_id, r.buyer_id), Decimal(0)) + r.amount
            outcomes = {r.lead_id: r.outcome for r in await conn.execute(sa.select(leads))}
    finally:
        await ledger.close()
    posts: Counter[tuple[str, str]] = Counter()
    for got in buyers.got(step="post"):
        posts[(str(got.json()["zip"]), got.buyer)] += 1
    return Truth(posts, sold, revenue, outcomes)


def pass_rule(t: Truth, lead_ids: dict[str, str]) -> None:
    """`lead_ids`: tag → lead_id for every lead of the run."""
    doubled = [k for k, n in t.posts.items() if n > 1]
    assert not doubled, f"leads sold twice to one buyer: {doubled}"
    buyers_of = Counter(tag for tag, _ in t.posts)
    two = [tag for tag, n in buyers_of.items() if n > 1]
    assert not two, f"exclusive leads accepted by two buyers: {two}"
    received = {(lead_ids[tag], b) for tag, b in t.posts}
    unbooked = sorted(received - set(t.sold))
    assert not unbooked, f"accepted posts without a ledger sale: {unbooked}"
    phantom = sorted(set(t.sold) - received)
    assert not phantom, f"sales no buyer received: {phantom}"
    for key in received:
        assert t.sold[key] == BIDS[key[1]] == t.revenue.get(key), (key, t.sold[key], t.revenue.get(key))
        # Bought, so never on the books as UNSOLD or DUPLICATE (no row: a sale the sink booked from
        # the buyer's outbox for a lead whose record died with its process; its intent answers it).
        assert t.outcomes.get(key[0]) in (None, "SOLD"), (key, t.outcomes.get(key[0]))


# --- callers and the documented reconciliation -------------------------------------------------


async def call(port: int, lead_id: str, tag: str) -> pb.RouteLeadResponse | grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply: pb.RouteLeadResponse = await pb_grpc.RouteLeadStub(channel).RouteLead(
                request(lead_id, tag), timeout=CALL_S, wait_for_ready=True
            )
            return reply
        except grpc.aio.AioRpcError as exc:
            return exc.code()


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], *argv: str
) -> str:
    """A `routelead` command as an operator runs it (in a thread: it runs its own event loop)."""
    with monkeypatch.context() as m:
        for k, v in env.items():
            m.setenv(k, v)
        capsys.readouterr()
        code = routelead(list(argv))
        out = capsys.readouterr().out
    assert code == 0, (argv, out)
    return out


async def reconcile(
    books: Books,
    redis_url: str | None,
    buyers: BuyerServer,
    lead_ids: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README, "Reconciliation": sink the outbox, then settle every open reservation and every
    open post by what the buyer says it received."""
    env = {**books.env, "ROUTELEAD_DEDUPE_KEY": SECRET.decode()}
    tags = {v: k for k, v in lead_ids.items()}
    received = {(lead_ids[str(g.json()["zip"])], g.buyer) for g in buyers.got(step="post")}
    if redis_url:
        env["REDIS_URL"] = redis_url
        await drain_outbox(books, redis_url)
        state = connect(redis_url, SECRET, op_timeout_s=5.0)
        try:
            open_ = await state.caps.list_unsettled(older_than_s=0)
        finally:
            await state.close()
        for u in open_:
            if u.lead_id in tags:
                how = "--confirm" if (u.lead_id, u.buyer_id) in received else "--free"
                await asyncio.to_thread(
                    cli, monkeypatch, capsys, env, "settle", u.buyer_id, u.reservation_id, how
                )
    listed = await asyncio.to_thread(cli, monkeypatch, capsys, env, "open-posts", "--json")
    for line in listed.splitlines():
        post = orjson.loads(line)
        sold = (post["lead_id"], post["buyer"]) in received
        await asyncio.to_thread(
            cli,
            monkeypatch,
            capsys,
            env,
            "settle-sale",
            post["lead_id"],
            post["buyer"],
            "sold" if sold else "rejected",
        )
    assert not (await asyncio.to_thread(cli, monkeypatch, capsys, env, "open-posts")).strip()


async def drain_outbox(books: Books, redis_url: str) -> None:
    """`routelead sink`, run until the outbox is empty."""
    client = aioredis.Redis.from_url(redis_url)
    ledger = await Ledger.open(books.url)
    try:
        sink = OutboxSink(client, ledger, BIDS, "test-sink", claim_idle_ms=0)
        await sink.setup()
        while await sink.step():
            pass
    finally:
        await ledger.close()
        await client.aclose()


# --- SIGKILL at each step of a lead ------------------------------------------------------------

STEPS = ("answered", "pinging", "posting", "accepted", "reserved", "arriving")
TAGS = {step: f"9100{i}" for i, step in enumerate(STEPS)}


@pytest.mark.parametrize(
    ("kind", "with_redis"),
    [("sqlite", False), ("sqlite", True), ("postgresql", False), ("postgresql", True)],
    ids=["sqlite", "sqlite+redis", "postgresql", "postgresql+redis"],
)
async def test_sigkill_at_every_step_of_a_lead_then_retry_sells_each_lead_once(
    kind: str,
    with_redis: bool,
    buyers: BuyerServer,
    make_books: Callable[[str], Awaitable[Books]],
    redis_procs: list[RedisProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One service life, six leads each held at a different step by its buyer, one SIGKILL:

    answered  routed, booked, its caller gone before the answer (after the books, before the answer)
    pinging   both buyers hold its ping (during the pings)
    posting   buyer a holds its post (during the post)
    accepted  a accepts; the books are locked before its record (after the accept, before the books)
    reserved  reserved, its intent waiting on the locked books (after the reservation, before the post)
    arriving  sent a moment before the kill (before any ping)
    """
    books = await make_books(kind)
    redis_url = None
    if with_redis:
        redis_procs.append(start_redis(appendonly=True))
        redis_url = redis_procs[-1].url
    lead_ids = {tag: f"{kind}{'-redis' if with_redis else ''}-{step}" for step, tag in TAGS.items()}
    arrived = {step: asyncio.Event() for step in STEPS}

    def hold(
        step: str, then: Behaviour | None = None, before: Callable[[], Awaitable[None]] | None = None
    ) -> Behaviour:
        async def handler(req: web.Request) -> web.StreamResponse:
            if before is not None:
                await before()
            arrived[step].set()
            if then is None:
                await asyncio.sleep(60)  # the service is killed meanwhile
            assert then is not None
            return await then(req)

        return handler

    buyers.on(
        "a",
        ping=per_lead(
            {
                TAGS["pinging"]: hold("pinging"),
                TAGS["reserved"]: hold("reserved", bid(str(BIDS["a"]))),
            },
            bid(str(BIDS["a"])),
        ),
        post=per_lead(
            {
                TAGS["answered"]: hold("answered", accept("A-1")),
                TAGS["posting"]: hold("posting"),
                TAGS["accepted"]: hold("accepted", accept("A-1"), before=books.lock),
            },
            accept("A-1"),
        ),
    )
    buyers.on(
        "b",
        ping=per_lead({TAGS["pinging"]: hold("pinging")}, bid(str(BIDS["b"]))),
        post=accept("B-1"),
    )
    config = config_file(tmp_path, buyers)
    env = service_env(books, redis_url)
    service = Serve(config, env)
    try:
        await service.ready()
        # After the books, before the answer: the caller hangs up once the post is in, and the
        # lead's record reaches the books all the same.
        first = asyncio.create_task(call(service.port, lead_ids[TAGS["answered"]], TAGS["answered"]))
        await asyncio.wait_for(arrived["answered"].wait(), 20)
        first.cancel()
        await wait_booked(books, lead_ids[TAGS["answered"]])
        calls = [
            asyncio.create_task(call(service.port, lead_ids[TAGS[s]], TAGS[s]))
            for s in ("pinging", "posting")
        ]
        for step in ("pinging", "posting"):
            await asyncio.wait_for(arrived[step].wait(), 20)
        calls.append(asyncio.create_task(call(service.port, lead_ids[TAGS["accepted"]], TAGS["accepted"])))
        await asyncio.wait_for(arrived["accepted"].wait(), 20)  # the books are locked now
        calls.append(asyncio.create_task(call(service.port, lead_ids[TAGS["reserved"]], TAGS["reserved"])))
        await asyncio.wait_for(arrived["reserved"].wait(), 20)
        await asyncio.sleep(0.3)  # the accepted record and the reserved lead's intent wait on the lock
        calls.append(asyncio.create_task(call(service.port, lead_ids[TAGS["arriving"]], TAGS["arriving"])))
        await asyncio.sleep(0.02)
        service.kill()
        await asyncio.gather(*calls)
    finally:
        service.stop()
        await books.unlock()
    # The lead killed while its intent waited on the books was never posted.
    assert not [g for g in buyers.got(step="post") if g.json()["zip"] == TAGS["reserved"]]

    again = Serve(config, env)
    try:
        await again.ready()
        # Every lead_id retried: the books answer those offered, the rest route for the first time.
        retried = {tag: await call(again.port, lead_id, tag) for tag, lead_id in lead_ids.items()}
        await reconcile(books, redis_url, buyers, lead_ids, monkeypatch, capsys)
        final = {tag: await call(again.port, lead_id, tag) for tag, lead_id in lead_ids.items()}
    finally:
        again.stop()

    t = await truth(books, buyers)
    pass_rule(t, lead_ids)
    # The lead that was posted before the kill is sold exactly once, to a, at its bid.
    for step in ("answered", "posting", "accepted"):
        assert (lead_ids[TAGS[step]], "a") in t.sold, step
    # What a retry hears once reconciled is the books: SOLD exactly where a buyer bought it.
    for tag, reply in final.items():
        if isinstance(reply, pb.RouteLeadResponse):
            bought = [b for (lid, b) in t.sold if lid == lead_ids[tag]]
            assert [s.buyer_id for s in reply.sales] == bought, (tag, reply)
            assert (reply.outcome == pb.SOLD) == bool(bought), (tag, reply)
        else:  # with Redis, a lead killed before any post keeps its claim: ABORTED, never re-routed
            assert with_redis and reply == grpc.StatusCode.ABORTED, (tag, reply)
            assert not any(lid == lead_ids[tag] for lid, _ in t.sold)
    for reply in retried.values():
        assert isinstance(reply, pb.RouteLeadResponse) or reply in (grpc.StatusCode.ABORTED,), reply


async def wait_booked(books: Books, lead_id: str) -> None:
    ledger = await Ledger.open(books.url)
    try:
        for _ in range(200):
            if (await ledger.lead(lead_id)).lead is not None:
                return
            await asyncio.sleep(0.05)
    finally:
        await ledger.close()
    raise AssertionError(f"{lead_id} never reached the books")


# --- faults under load ---------------------------------------------------------------------------


async def load(
    ports: list[int], leads_n: int, prefix: str, fault: Callable[[], Awaitable[None]], fault_after: int
) -> dict[str, pb.RouteLeadResponse | grpc.StatusCode]:
    """leads_n leads, 8 in flight, spread over `ports`; `fault` fires after `fault_after` answers."""
    gate = asyncio.Semaphore(8)
    answered = 0
    enough = asyncio.Event()
    out: dict[str, pb.RouteLeadResponse | grpc.StatusCode] = {}

    async def one(i: int) -> None:
        nonlocal answered
        async with gate:
            tag = f"{i:05d}"
            reply = await call_once(ports[i % len(ports)], f"{prefix}-{i}", tag)
            out[tag] = reply
            answered += isinstance(reply, pb.RouteLeadResponse)
            if answered >= fault_after:
                enough.set()

    async def strike() -> None:
        await asyncio.wait_for(enough.wait(), 60)
        await fault()

    await asyncio.wait_for(asyncio.gather(strike(), *(one(i) for i in range(leads_n))), 120)
    return out


async def call_once(port: int, lead_id: str, tag: str) -> pb.RouteLeadResponse | grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply: pb.RouteLeadResponse = await pb_grpc.RouteLeadStub(channel).RouteLead(
                request(lead_id, tag), timeout=CALL_S
            )
            return reply
        except grpc.aio.AioRpcError as exc:
            return exc.code()


def slow_buyers(buyers: BuyerServer, seconds: float = 0.03) -> None:
    async def later(req: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)  # widens the window between a buyer's accept and our books
        return await accept("A-1")(req)

    buyers.on("a", ping=bid(str(BIDS["a"])), post=later)
    buyers.on("b", ping=bid(str(BIDS["b"])), post=accept("B-1"))


async def test_redis_killed_and_restarted_under_load_with_two_services_sells_each_lead_once(
    buyers: BuyerServer,
    make_books: Callable[[str], Awaitable[Books]],
    redis_procs: list[RedisProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two `serve` processes share Redis (AOF) and the books; Redis is SIGKILLed under load and
    restarted 1 s later; afterwards every lead_id is retried on the *other* service."""
    slow_buyers(buyers)
    books = await make_books("sqlite")
    redis_procs.append(start_redis(appendonly=True))
    own = redis_procs[-1]
    config = config_file(tmp_path, buyers)
    env = service_env(books, own.url)
    services = [Serve(config, env), Serve(config, env)]

    async def kill_redis() -> None:
        assert own.executor.process is not None
        os.kill(own.executor.process.pid, signal.SIGKILL)
        await asyncio.sleep(1.0)
        with contextlib.suppress(ProcessFinishedWithError):
            own.executor.stop()  # reaps the dead process
        own.executor.start()

    try:
        for s in services:
            await s.ready()
        ports = [s.port for s in services]
        first = await load(ports, 80, "R", kill_redis, 20)
        # Every lead_id again, on the other service.
        tags = sorted(first)
        second = {tag: await call_once(ports[(int(tag) + 1) % 2], f"R-{int(tag)}", tag) for tag in tags}
    finally:
        for s in services:
            s.stop()
    lead_ids = {tag: f"R-{int(tag)}" for tag in tags}
    await reconcile(books, own.url, buyers, lead_ids, monkeypatch, capsys)
    t = await truth(books, buyers)
    pass_rule(t, lead_ids)
    # A retry never contradicts the books: SOLD to a buyer the books name, or a clear error.
    for tag, reply in second.items():
        if isinstance(reply, pb.RouteLeadResponse) and reply.outcome == pb.SOLD:
            assert {s.buyer_id for s in reply.sales} <= {b for (lid, b) in t.sold if lid == lead_ids[tag]}
    assert sum(1 for r in first.values() if isinstance(r, pb.RouteLeadResponse)) >= 20


async def test_sqlite_file_locked_then_sigkill_sells_each_lead_once(
    buyers: BuyerServer,
    make_books: Callable[[str], Awaitable[Books]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The embedded service under load; another connection holds BEGIN EXCLUSIVE on the SQLite
    file for 2.5 s and the service is SIGKILLed while it is held (held records die with it)."""
    slow_buyers(buyers)
    books = await make_books("sqlite")
    config = config_file(tmp_path, buyers)
    env = service_env(books, None)
    service = Serve(config, env)

    async def lock_then_kill() -> None:
        await books.lock()
        await asyncio.sleep(2.5)
        service.kill()
        await books.unlock()

    try:
        await service.ready()
        first = await load([service.port], 60, "S", lock_then_kill, 15)
    finally:
        service.stop()
        await books.unlock()
    lead_ids = {tag: f"S-{int(tag)}" for tag in first}
    again = Serve(config, env)
    try:
        await again.ready()
        for tag, lead_id in lead_ids.items():
            await call_once(again.port, lead_id, tag)
        await reconcile(books, None, buyers, lead_ids, monkeypatch, capsys)
    finally:
        again.stop()
    pass_rule(await truth(books, buyers), lead_ids)


async def test_postgresql_connections_dropped_under_load_sell_each_lead_once(
    buyers: BuyerServer,
    make_books: Callable[[str], Awaitable[Books]],
    pg: PgServer | ExternalPg,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pg_terminate_backend on every connection of the service, twice, under load."""
    slow_buyers(buyers)
    books = await make_books("postgresql")
    config = config_file(tmp_path, buyers)
    env = service_env(books, None)
    service = Serve(config, env)
    database = books.url.rsplit("/", 1)[1]

    async def cut() -> None:
        for _ in range(2):
            admin = await asyncpg.connect(pg.admin_url)
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
            finally:
                await admin.close()
            await asyncio.sleep(0.3)

    try:
        await service.ready()
        first = await load([service.port], 60, "P", cut, 15)
        lead_ids = {tag: f"P-{int(tag)}" for tag in first}
        for tag, lead_id in lead_ids.items():
            await call_once(service.port, lead_id, tag)
        await reconcile(books, None, buyers, lead_ids, monkeypatch, capsys)
    finally:
        service.stop()
    pass_rule(await truth(books, buyers), lead_ids)
    assert sum(1 for r in first.values() if isinstance(r, pb.RouteLeadResponse)) >= 15
