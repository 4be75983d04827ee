"""The ledger's post-accept rates feed the expected-revenue ranking of a fresh process."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
from routelead.api.server import Service
from routelead.records.buyer_stats import keep_fresh, refresh
from routelead.records.reports import Reports
from routelead.state.memory import SeededBuyerStats
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, reject
from tests.configs import GOOD_LEAD, buyer, compile_doc, document
from tests.records.conftest import Backend
from tests.records.test_reports import route_leads


async def _one(service: Service, lead_id: str) -> pb.RouteLeadResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        request = pb.RouteLeadRequest(lead_id=lead_id, flow="solar", source_id="src-1", fields=GOOD_LEAD)
        reply: pb.RouteLeadResponse = await pb_grpc.RouteLeadStub(channel).RouteLead(request, timeout=10)
        return reply


async def test_a_new_process_ranks_by_the_post_accept_rates_in_the_books(
    backend: Backend, buyers: BuyerServer
) -> None:
    ledger = await backend.ledger()
    history = await route_leads(ledger, buyers)  # b outbid a every time and rejected every post
    n = sum(1 for r in history if not r.test)
    buyers.on("a", ping=bid("33.33"), post=accept("A-1"))
    buyers.on("b", ping=bid("41.07"), post=reject("dupe"))
    doc = document([buyer(buyers.url, "a"), buyer(buyers.url, "b")], dedupe=None, ranking="expected_revenue")
    reports = Reports(ledger.engine)

    stats = SeededBuyerStats()
    await refresh(stats, reports)
    # b: 9 / (n + 10) accepted with the prior; a: (n + 9) / (n + 10).
    assert stats.accept_rate("b") == Decimal(9) / Decimal(n + 10)
    assert stats.accept_rate("a") == Decimal(n + 9) / Decimal(n + 10)
    async with Service(compile_doc(doc), ledger=ledger, stats=stats) as seeded:
        informed = await _one(seeded, "after-seed")
    async with Service(compile_doc(doc), ledger=ledger) as fresh:
        naive = await _one(fresh, "no-seed")

    assert stats.accept_rate("a") == Decimal(n + 10) / Decimal(n + 11)  # its own post on top
    status = {a.buyer_id: pb.AttemptStatus.Name(a.status) for a in informed.attempts}
    assert status["a"] == "POST_ACCEPTED" and status["b"] == "OUTBID"  # b is never posted again
    naive_status = {a.buyer_id: pb.AttemptStatus.Name(a.status) for a in naive.attempts}
    assert naive_status["b"] == "POST_REJECTED"  # without the books, b's price wins the first post
    assert informed.revenue == naive.revenue == "33.33"


async def test_the_rates_are_refreshed_while_serving(backend: Backend, buyers: BuyerServer) -> None:
    ledger = await backend.ledger()
    stats = SeededBuyerStats()
    reports = Reports(ledger.engine)
    await refresh(stats, reports)
    assert stats.accept_rate("b") == Decimal("0.9")  # nothing in the books: the prior
    stop = asyncio.Event()
    task = asyncio.create_task(keep_fresh(stats, reports, stop, every_s=0.05))
    n = sum(1 for r in await route_leads(ledger, buyers) if not r.test)
    want = Decimal(9) / Decimal(n + 10)  # n rejected posts in the books
    for _ in range(100):  # bounded: 5 s at most
        if stats.accept_rate("b") == want:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert stats.accept_rate("b") == want
    stats.record_post("b", True)  # a post of this process after the refresh counts on top
    assert stats.accept_rate("b") > Decimal(9) / Decimal(20)
