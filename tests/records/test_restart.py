"""The embedded service (memory hot state, SQLite books) restarted: a retried lead_id gets its
first answer back from the books, never a second route or sale."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, first_doing, hang, no_bid
from tests.configs import GOOD_LEAD, buyer, document
from tests.servers import free_port, wait_answering


class Embedded:
    """`routelead serve` with no REDIS_URL and no DATABASE_URL: the embedded default."""

    def __init__(self, config: Path, db: Path, **extra_env: str) -> None:
        self.port = free_port()
        self.db, self.extra_env = db, extra_env
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ROUTELEAD_REDIS_URL")}
        env.update(DATABASE_URL="", ROUTELEAD_DB=str(db), ROUTELEAD_LOG_LEVEL="WARNING")
        env.update(extra_env)
        argv = [sys.executable, "-m", "routelead.cli", "serve", "--config", str(config)]
        argv += ["--listen", f"127.0.0.1:{self.port}", "--log-level", "WARNING"]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def ready(self) -> None:
        await wait_answering(self.port, self.proc)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)  # drain: held records go to the spool
        code = self.proc.wait(60)
        if self.proc.stderr:
            self.proc.stderr.close()
        return code

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # no drain: memory is simply gone
        self.proc.wait(20)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def serve(tmp_path: Path) -> object:
    started: list[Embedded] = []

    def go(config: Path) -> Embedded:
        s = Embedded(config, tmp_path / "books.db")
        started.append(s)
        return s

    yield go
    for s in started:
        if s.proc.poll() is None:
            s.kill()


async def test_a_retry_after_a_restart_gets_the_answer_from_the_books(
    tmp_path: Path, buyers: BuyerServer, serve: object
) -> None:
    buyers.on("a", ping=bid("41.50"), post=accept("A-77"))
    buyers.on("b", ping=no_bid("not today"))
    buyers.on("c", ping=hang(30))
    config = tmp_path / "flows.yaml"
    doc = document([buyer(buyers.url, x) for x in "abc"], dedupe=None)
    config.write_text(yaml.safe_dump(doc))

    def lead(lead_id: str) -> pb.RouteLeadRequest:
        return pb.RouteLeadRequest(lead_id=lead_id, flow="solar", source_id="src-1", fields=GOOD_LEAD)

    first_process = serve(config)  # type: ignore[operator]
    await first_process.ready()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first_process.port}") as channel:
        first = await pb_grpc.RouteLeadStub(channel).RouteLead(lead("crm-1"), timeout=10)
    first_process.kill()

    second_process = serve(config)  # type: ignore[operator]
    await second_process.ready()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{second_process.port}") as channel:
        stub = pb_grpc.RouteLeadStub(channel)
        again = await stub.RouteLead(lead("crm-1"), timeout=10)
        fresh = await stub.RouteLead(lead("crm-2"), timeout=10)

    assert first.outcome == pb.SOLD and not first.replayed
    assert again.replayed
    # The first answer, field for field, apart from the replay flag.
    again.replayed = False
    assert again == first
    assert sum(1 for p in buyers.got("a", "post") if b"crm-1" in p.body) == 1
    assert len(buyers.got("a", "ping")) == 2  # crm-1 once, crm-2 once: the retry asked nobody
    assert fresh.outcome == pb.SOLD and not fresh.replayed


async def test_a_lead_the_books_refused_until_shutdown_is_booked_by_the_next_start(
    tmp_path: Path, buyers: BuyerServer, serve: object
) -> None:
    lock = sqlite3.connect(tmp_path / "books.db", isolation_level=None, timeout=0)

    async def lock_the_books() -> None:
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the books' write lock

    # Locked while the post is at the buyer: the post's intent is on the books, its record is not.
    buyers.on("a", ping=bid("27.00"), post=first_doing(lock_the_books, accept("A-5")))
    config = tmp_path / "flows.yaml"
    config.write_text(yaml.safe_dump(document([buyer(buyers.url, "a")], dedupe=None)))
    request = pb.RouteLeadRequest(lead_id="spooled-1", flow="solar", source_id="src-1", fields=GOOD_LEAD)

    first_process = serve(config)  # type: ignore[operator]
    await first_process.ready()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first_process.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as unbooked:
                await pb_grpc.RouteLeadStub(channel).RouteLead(request, timeout=10)
        exit_code = first_process.stop()
        spooled = sorted((tmp_path / "books.db.spool").glob("unbooked-*.jsonl"))
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()

    second_process = serve(config)  # type: ignore[operator]
    await second_process.ready()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{second_process.port}") as channel:
        again = await pb_grpc.RouteLeadStub(channel).RouteLead(request, timeout=10)

    assert unbooked.value.code() == grpc.StatusCode.UNAVAILABLE and exit_code == 0
    assert len(spooled) == 1 and not spooled[0].exists()  # applied at start, then removed
    # Booked by the second start, and answered from the books: sold once, never routed again.
    assert again.replayed and again.outcome == pb.SOLD and [s.buyer_lead_id for s in again.sales] == ["A-5"]
    assert len(buyers.got("a", "post")) == 1
