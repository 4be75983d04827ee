"""Replay and live routing share one auction machine: replaying the recorded leads through the
unchanged configuration reproduces every live decision, lead by lead, to the cent."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import orjson
from aiohttp import web
from routelead.api.server import Service
from routelead.replay.engine import replay_lead
from routelead.replay.recorded import recorded_leads
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import Behaviour, BuyerServer
from tests.configs import GOOD_LEAD, buyer, compile_doc, document, fixed_buyer
from tests.records.conftest import Backend

LEADS = 48


def _roll(buyer_id: str, body: bytes, step: str) -> int:
    """A die per buyer, lead and step: varied answers that are the same if asked again."""
    return hashlib.sha256(f"{buyer_id}|{step}|".encode() + body).digest()[0]


def moody(buyer_id: str, exclusive_sometimes: bool = False) -> tuple[Behaviour, Behaviour]:
    """Bids, passes or bids exclusively depending on the lead; accepts most posts, not all."""

    async def ping(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        n = _roll(buyer_id, orjson.dumps(orjson.loads(body).get("zip", "")), "ping")
        if n < 40:
            doc: dict[str, object] = {"bid": False, "reason": "not today"}
        else:
            doc = {"bid": True, "price": f"{5 + n % 60}.{n % 100:02d}", "ping_id": f"{buyer_id}-{n}"}
            if exclusive_sometimes and n % 3 == 0:
                doc["exclusive"] = True
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def post(request: web.Request) -> web.StreamResponse:
        lead = orjson.loads(await request.read())
        n = _roll(buyer_id, orjson.dumps(lead.get("zip", "")), "post")
        doc = {"status": "accepted", "lead_id": f"{buyer_id}-ok"} if n >= 50 else {"status": "rejected"}
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    return ping, post


async def test_replaying_the_books_through_the_same_config_reproduces_every_decision(
    backend: Backend, buyers: BuyerServer
) -> None:
    for b in "abcde":
        ping, post = moody(b, exclusive_sometimes=b in "bd")
        buyers.on(b, ping=ping, post=post)
    _, flat_post = moody("f")
    buyers.on("f", post=flat_post)
    doc = document(
        [*(buyer(buyers.url, b) for b in "abcde"), fixed_buyer(buyers.url, "f", "9.50")],
        tiers=[["a", "b", "c"], ["d", "e"], ["f"]],
        dedupe=None,
        max_buyers=2,
        floor="20.00",
        exclusive_floor="45.00",
    )
    doc["flows"][0]["tiers"][1]["mode"] = "waterfall"
    doc["flows"][0]["tiers"][1]["order"] = "priority"
    doc["flows"][0]["tiers"][2]["floor"] = "5.00"
    config = compile_doc(doc)
    ledger = await backend.ledger()
    async with (
        Service(config, ledger=ledger) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        client = pb_grpc.RouteLeadStub(channel)

        async def one(n: int) -> pb.RouteLeadResponse:
            fields = {**GOOD_LEAD, "email": f"r{n}@example.com", "zip": f"{90000 + n * 37:05d}"}
            request = pb.RouteLeadRequest(
                lead_id=f"rp-{n}", flow="solar", source_id=("src-1", "src-free")[n % 2], fields=fields
            )
            reply: pb.RouteLeadResponse = await client.RouteLead(request, timeout=10)
            return reply

        live = {r.lead_id: r for r in await asyncio.gather(*(one(n) for n in range(LEADS)))}

    now = datetime.now(UTC)
    replayed = 0
    shapes: set[tuple[int, bool]] = set()
    async for lead in recorded_leads(ledger.engine, now - timedelta(hours=1), now + timedelta(minutes=1)):
        answer = live[lead.lead_id]
        again = replay_lead(config, lead)
        assert again.unknowns.unpinged == 0 and again.unknowns.assumed_accepts == 0, lead.lead_id
        assert sorted((s.buyer_id, s.price, s.cost) for s in again.sales) == sorted(
            (s.buyer_id, Decimal(s.price), Decimal(s.cost)) for s in answer.sales
        ), lead.lead_id
        assert again.cost == Decimal(answer.cost), lead.lead_id
        shapes.add((len(answer.sales), any(s.exclusive for s in answer.sales)))
        replayed += 1
    assert replayed == LEADS
    # The run really exercised the decisions: one sale, two shared sales, an exclusive one.
    assert {(1, False), (1, True), (2, False)} <= shapes, shapes
