"""The router on each backend: balances and budgets skip buyers without a ping, unknown post
outcomes stay counted and listed, a full buyer is not pinged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import grpc
import pytest
from routelead.api.server import Service
from routelead.records.codec import SaleRecord, decode
from routelead.state.redis import connect
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, hang, respond
from tests.configs import GOOD_LEAD, buyer, compile_doc, document, fixed_buyer
from tests.conftest import Harness
from tests.state.conftest import Backend

SKIPPED_CAP = pb.AttemptStatus.Value("SKIPPED_CAP")
Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def on(backend: Backend) -> AsyncIterator[Start]:
    running: list[Harness] = []

    async def go(buyers: list[dict[str, Any]], **flow: Any) -> Harness:
        config = compile_doc(document(buyers, **flow))
        service = Service(config, caps=backend.caps, dedupe=backend.dedupe, idempotency=backend.idempotency)
        await service.start()
        h = Harness(service, grpc.aio.insecure_channel(f"127.0.0.1:{service.port}"))
        running.append(h)
        return h

    yield go
    for h in running:
        await h.channel.close()
        await h.service.stop(grace=0.5)


def attempt(reply: pb.RouteLeadResponse, buyer_id: str) -> pb.Attempt:
    return next(a for a in reply.attempts if a.buyer_id == buyer_id)


async def test_a_prepaid_buyer_is_sold_to_only_while_its_balance_covers_the_price(
    backend: Backend, buyers: BuyerServer, on: Start
) -> None:
    buyers.on("pp", post=accept())
    h = await on([fixed_buyer(buyers.url, "pp", "20.00", prepaid={})])

    empty = await h.route()
    await backend.caps.top_up("pp", Decimal("30"))
    paid = await h.route()
    short = await h.route()

    assert attempt(empty, "pp").status == SKIPPED_CAP and "balance" in attempt(empty, "pp").reason
    assert [s.buyer_id for s in paid.sales] == ["pp"]
    assert attempt(short, "pp").status == SKIPPED_CAP
    assert len(buyers.got("pp", "post")) == 1
    assert await backend.caps.balance("pp") == Decimal("10.00")


async def test_a_bid_over_the_remaining_budget_goes_to_the_next_bid(
    backend: Backend, buyers: BuyerServer, on: Start
) -> None:
    buyers.on("big", ping=bid(60), post=accept())
    buyers.on("small", ping=bid(10), post=accept())
    h = await on([buyer(buyers.url, "big", budgets={"day": "100.00"}), buyer(buyers.url, "small")])

    first = await h.route()
    second = await h.route()

    assert [s.buyer_id for s in first.sales] == ["big"]
    assert [s.buyer_id for s in second.sales] == ["small"]
    assert "budget" in attempt(second, "big").reason
    assert len(buyers.got("big", "post")) == 1


async def test_a_budget_counts_the_booked_price_the_bid_unless_price_on_post(
    backend: Backend, buyers: BuyerServer, on: Start
) -> None:
    # Bids 40.00, then says in its post answer that it pays 80.00: booked (and counted) at the bid.
    buyers.on("a", ping=bid(40), post=respond({"status": "accepted", "lead_id": "A", "price": "80.00"}))
    buyers.on("b", ping=bid(10), post=accept())
    h = await on([buyer(buyers.url, "a", budgets={"day": "100.00"}, post={"answer": {"price": "price"}})])

    sold = [await h.route() for _ in range(2)]  # 40.00 + 40.00 fits 100.00; 80.00 + 80.00 would not

    assert [(s.buyer_id, s.price, s.stated_price) for r in sold for s in r.sales] == [
        ("a", "40.00", "80.00")
    ] * 2


async def test_a_budget_counts_the_price_a_price_on_post_buyer_states_not_the_bid(
    backend: Backend, buyers: BuyerServer, on: Start
) -> None:
    # Its contract prices on the post: it says it pays 80.00, and that is what the budget spent.
    buyers.on("a", ping=bid(40), post=respond({"status": "accepted", "lead_id": "A", "price": "80.00"}))
    buyers.on("b", ping=bid(10), post=accept())
    stated = {"answer": {"price": "price"}, "price_on_post": True}
    h = await on([buyer(buyers.url, "a", budgets={"day": "100.00"}, post=stated), buyer(buyers.url, "b")])

    first = await h.route()
    second = await h.route()  # 80.00 + a 40.00 bid is over 100.00 (counted at the bid: 80.00, sold)

    assert [(s.buyer_id, s.price) for s in first.sales] == [("a", "80.00")]
    assert [s.buyer_id for s in second.sales] == ["b"] and "budget" in attempt(second, "a").reason
    assert len(buyers.got("a", "post")) == 1


async def test_a_post_with_an_unknown_outcome_stays_counted_and_listed(
    backend: Backend, buyers: BuyerServer, on: Start
) -> None:
    buyers.on("a", ping=bid(40), post=hang(5))
    buyers.on("b", ping=bid(10), post=accept())
    h = await on([buyer(buyers.url, "a", caps={"day": 1}), buyer(buyers.url, "b")])

    timed_out = await h.route()
    next_lead = await h.route()

    assert "outcome unknown" in attempt(timed_out, "a").reason
    [u] = await backend.caps.list_unsettled(older_than_s=3600)
    assert (u.buyer_id, u.lead_id, u.state) == ("a", timed_out.lead_id, "unsettled")
    assert attempt(next_lead, "a").status == SKIPPED_CAP
    assert len(buyers.got("a", "ping")) == 1  # the full buyer was not pinged again


async def test_a_per_source_cap_counts_only_that_sources_leads(
    backend: Backend, buyers: BuyerServer, on: Start
) -> None:
    buyers.on("a", ping=bid(40), post=accept())
    h = await on([buyer(buyers.url, "a", caps={"sources": {"src-1": {"day": 1}}})])

    first = await h.route()
    second = await h.route()
    other = await h.route(source_id="src-free")

    assert [s.buyer_id for s in first.sales] == ["a"]
    assert attempt(second, "a").status == SKIPPED_CAP and "for source=src-1" in attempt(second, "a").reason
    assert [s.buyer_id for s in other.sales] == ["a"]


async def test_an_accepted_post_lands_in_the_outbox_with_its_commit(
    buyers: BuyerServer, redis_url: str
) -> None:
    """Uncapped buyers too: every post is reserved, and the commit appends the sale to the books'
    outbox in the same script call, so a process killed before its ledger write loses no sale."""
    buyers.on("free", ping=bid("33.30"), post=accept("F-1"))
    state = connect(redis_url, b"s" * 16, op_timeout_s=2.0)
    service = Service(compile_doc(document([buyer(buyers.url, "free")])), caps=state.caps)
    await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            reply = await pb_grpc.RouteLeadStub(channel).RouteLead(
                pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=GOOD_LEAD), timeout=10
            )
        entries = await state.redis.xrange("rl:{free}:outbox")
        open_reservations = await state.caps.list_unsettled(older_than_s=0)
    finally:
        await service.stop(grace=0.5)
        await state.close()

    assert reply.outcome == pb.SOLD
    assert open_reservations == []  # committed, not left as an orphan
    assert entries is not None
    [(_, fields)] = entries
    assert fields is not None
    raw = fields[b"record"]
    assert isinstance(raw, bytes)
    record = decode(raw)
    assert isinstance(record, SaleRecord)
    assert (record.lead_id, record.buyer_id, record.price, record.buyer_lead_id, record.settlement) == (
        reply.lead_id,
        "free",
        Decimal("33.30"),
        "F-1",
        "sold",
    )
