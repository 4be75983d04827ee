"""Inbound ping-post on real servers: Quote and Commit over gRPC, aiohttp buyers, the books on SQLite."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from routelead.api.server import Service
from routelead.api.stats import supplier_pb
from routelead.domain.conditions import check_conditions
from routelead.domain.rules import Facts
from routelead.records.ledger import Ledger
from routelead.records.reports import Reports, Window
from routelead.records.schema import entries, leads, quotes
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc
from routelead_client import AsyncRouteLeadClient, FailedPrecondition, RateLimited
from routelead_client.cli import main as cli_main

from tests.buyers import BuyerServer, accept, bid, no_bid, reject
from tests.configs import GOOD_LEAD, PII_VALUES, buyer, compile_doc, document

PING = {k: v for k, v in GOOD_LEAD.items() if k in ("state", "zip", "homeowner", "credit_range")}
INBOUND: dict[str, Any] = {"margin": {"percent": "20"}, "min_margin": "1.00", "ttl_s": 60}


@dataclass
class Desk:
    service: Service
    stub: pb_grpc.RouteLeadStub
    ledger: Ledger

    async def quote(self, fields: dict[str, str] | None = None, **kw: Any) -> pb.QuoteResponse:
        request = pb.QuoteRequest(
            source_id=kw.pop("source_id", "src-1"), flow="solar", fields=PING if fields is None else fields
        )
        got: pb.QuoteResponse = await self.stub.Quote(request, timeout=10)
        return got

    async def commit(self, quote_id: str, fields: dict[str, str] | None = None) -> pb.RouteLeadResponse:
        request = pb.CommitRequest(quote_id=quote_id, fields=GOOD_LEAD if fields is None else fields)
        got: pb.RouteLeadResponse = await self.stub.Commit(request, timeout=10)
        return got

    async def quote_rows(self) -> dict[str, dict[str, Any]]:
        async with self.ledger.engine.connect() as conn:
            return {r.quote_id: dict(r._mapping) for r in await conn.execute(sa.select(quotes))}


Open = Callable[..., Awaitable[Desk]]


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Open]:
    """desk(buyers, inbound=..., clock=..., **flow): a service with books, over real gRPC."""
    running: list[tuple[Service, grpc.aio.Channel, Ledger]] = []

    async def go(
        buyers: list[dict[str, Any]],
        inbound: dict[str, Any] | None = None,
        clock: Callable[[], float] | None = None,
        **flow: Any,
    ) -> Desk:
        doc = document(buyers, **flow)
        doc["sources"][0] = {"id": "src-1", "cost": "10.00", "inbound": inbound or INBOUND}
        ledger = await Ledger.open(f"sqlite:///{tmp_path / f'books{len(running)}.db'}")
        service = Service(compile_doc(doc), ledger=ledger, clock=clock or time.time)
        await service.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        running.append((service, channel, ledger))
        return Desk(service, pb_grpc.RouteLeadStub(channel), ledger)

    yield go
    for service, channel, ledger in running:
        await channel.close()
        await service.stop(grace=0.5)
        await ledger.close()


async def test_quote_then_commit_sells_at_the_quoted_price_with_cost_and_margin_exact(
    buyers: BuyerServer, desk: Open
) -> None:
    buyers.on("a", ping=bid("41.37"), post=accept("A-9"))
    buyers.on("b", ping=bid("30.00"), post=accept("B-9"))
    d = await desk([buyer(buyers.url, "a"), buyer(buyers.url, "b")])

    q = await d.quote()

    # 20 % of 41.37 is 8.274; the offer is rounded down to the cent, so the margin is never less.
    assert q.offered and q.price == "33.09"
    assert 59_000 < q.expires_in_ms <= 60_000 and q.expires_at.endswith("+00:00")
    assert q.quote_id.startswith("q-") and q.config_version == d.service.config.version
    pings = buyers.got(step="ping")
    assert len(pings) == 2 and not any(v in p.body.decode() for p in pings for v in PII_VALUES)
    assert buyers.got(step="post") == []

    sold = await d.commit(q.quote_id)

    assert sold.outcome == pb.SOLD and sold.lead_id == q.quote_id
    assert [(s.buyer_id, s.price, s.cost, s.margin) for s in sold.sales] == [("a", "41.37", "33.09", "8.28")]
    assert (sold.cost, sold.revenue, sold.margin) == ("33.09", "41.37", "8.28")
    posts = buyers.got(step="post")
    assert [p.buyer for p in posts] == ["a"]
    # The post carries the full lead and the ping id the buyer's ping answer gave.
    assert posts[0].json()["email"] == GOOD_LEAD["email"]
    async with d.ledger.engine.connect() as conn:
        row = (await conn.execute(sa.select(leads).where(leads.c.lead_id == q.quote_id))).one()
        money = {
            (e.buyer_id, e.kind): e.amount
            for e in await conn.execute(sa.select(entries).where(entries.c.lead_id == q.quote_id))
        }
    assert (row.outcome, row.cost, row.revenue) == ("SOLD", Decimal("33.09"), Decimal("41.37"))
    assert money == {("", "cost"): Decimal("33.09"), ("a", "revenue"): Decimal("41.37")}
    booked = (await d.quote_rows())[q.quote_id]
    assert booked["state"] == "won" and booked["price"] == Decimal("33.09")
    assert booked["revenue"] == Decimal("41.37") and booked["config_version"] == q.config_version


async def test_a_rejection_at_commit_falls_back_only_to_bids_that_keep_the_margin(
    buyers: BuyerServer, desk: Open
) -> None:
    buyers.on("a", ping=bid("40.00"), post=reject("full today"))
    buyers.on("b", ping=bid("32.50"), post=accept("B-1"))
    buyers.on("c", ping=bid("36.00"), post=accept("C-1"))
    d = await desk([buyer(buyers.url, x) for x in ("a", "b", "c")])

    q = await d.quote()
    assert q.price == "32.00"  # 40.00 less 20 %
    sold = await d.commit(q.quote_id)

    # c pays 36.00 ≥ 32.00 + the 1.00 minimum margin; b's 32.50 would leave 0.50: never posted.
    assert [(s.buyer_id, s.price, s.cost, s.margin) for s in sold.sales] == [("c", "36.00", "32.00", "4.00")]
    assert [p.buyer for p in buyers.got(step="post")] == ["a", "c"]
    status = {a.buyer_id: (pb.AttemptStatus.Name(a.status), a.reason) for a in sold.attempts}
    assert status["a"][0] == "POST_REJECTED" and status["b"][0] == "BELOW_FLOOR"


async def test_a_commit_repeated_is_answered_from_the_first_and_sells_once(
    buyers: BuyerServer, desk: Open
) -> None:
    buyers.on("a", ping=bid("50.00"), post=accept("A-1"))
    d = await desk([buyer(buyers.url, "a")])
    q = await d.quote()

    first, again, concurrent = (
        await d.commit(q.quote_id),
        *await asyncio.gather(d.commit(q.quote_id), d.commit(q.quote_id)),
    )

    assert first.outcome == pb.SOLD and not first.replayed
    for repeat in (again, concurrent):
        assert repeat.replayed and [s.price for s in repeat.sales] == ["50.00"]
    assert len(buyers.got(step="post")) == 1


async def test_pii_in_a_quote_is_refused_naming_each_field(buyers: BuyerServer, desk: Open) -> None:
    d = await desk([buyer(buyers.url, "a")])

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await d.quote({**PING, "email": GOOD_LEAD["email"], "phone": GOOD_LEAD["phone"]})

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert "fields.email" in details and "fields.phone" in details and "pii" in details
    assert not any(v in details for v in PII_VALUES)
    assert buyers.got() == []
    # A ping field the schema requires is still required.
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await d.quote({"zip": "90210"})
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fields.state: required" in (missing.value.details() or "")


async def test_no_acceptable_bid_is_a_clear_no_offer_and_is_booked(buyers: BuyerServer, desk: Open) -> None:
    buyers.on("a", ping=no_bid("not in CA"))
    buyers.on("b", ping=bid("0.80"))
    d = await desk([buyer(buyers.url, "a"), buyer(buyers.url, "b")])

    q = await d.quote()

    # b's 0.80 leaves nothing after the 1.00 minimum margin; a did not bid.
    assert not q.offered and q.price == "" and q.expires_at == ""
    assert "nothing is left after the margin 1.00" in q.reason
    buyers.on("b", ping=no_bid())
    q2 = await d.quote()
    assert not q2.offered and q2.reason == "no acceptable bid (2 no bid)"
    rows = await d.quote_rows()
    assert rows[q.quote_id]["state"] == rows[q2.quote_id]["state"] == "no_offer"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await d.commit(q.quote_id)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "made no offer" in (caught.value.details() or "")


async def test_a_commit_that_differs_from_the_quote_is_refused_naming_the_field(
    buyers: BuyerServer, desk: Open
) -> None:
    buyers.on("a", ping=bid("50.00"), post=accept())
    d = await desk([buyer(buyers.url, "a")])
    q = await d.quote()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await d.commit(q.quote_id, {**GOOD_LEAD, "state": "TX", "credit_range": "600-650"})

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "fields.credit_range, fields.state" in (caught.value.details() or "")
    assert buyers.got(step="post") == []
    # The quote still stands for the lead that was quoted.
    assert (await d.commit(q.quote_id)).outcome == pb.SOLD


async def test_unknown_and_expired_quotes_are_refused_clearly(buyers: BuyerServer, desk: Open) -> None:
    # The buyer's bid is good for 0.3 s: the quote expires with it, before the source's 60 s.
    buyers.on("a", ping=bid("50.00", conditions={"expires_in_s": 0.3}), post=accept())
    d = await desk([buyer(buyers.url, "a")])

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await d.commit("q-" + "0" * 32)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown" in (unknown.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await d.commit("not-a-quote")
    assert malformed.value.code() == grpc.StatusCode.NOT_FOUND

    q = await d.quote()
    assert q.offered and q.expires_in_ms <= 300
    await asyncio.sleep(0.5)
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await d.commit(q.quote_id)

    assert expired.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"quote {q.quote_id} expired at" in (expired.value.details() or "")
    assert buyers.got(step="post") == []
    assert (await d.quote_rows())[q.quote_id]["state"] == "expired"


async def test_a_source_without_inbound_terms_cannot_quote(buyers: BuyerServer, desk: Open) -> None:
    d = await desk([buyer(buyers.url, "a")])

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await d.quote(source_id="src-free")

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "sources[].inbound" in (caught.value.details() or "")


async def test_quote_limits_answer_resource_exhausted_with_a_retry_after_hint(
    buyers: BuyerServer, desk: Open
) -> None:
    buyers.on("a", ping=bid("50.00"), post=accept())
    now = [1_800_000_000.25]  # a quarter into a second
    inbound = {**INBOUND, "limits": {"per_second": 2, "max_ping_post_ratio": 3}}
    d = await desk([buyer(buyers.url, "a")], inbound=inbound, clock=lambda: now[0])

    first = await d.quote()
    q = await d.quote()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await d.quote()

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(caught.value.trailing_metadata() or ())
    assert trailing["retry-after-ms"] == "750"
    details = caught.value.details() or ""
    assert "2 quotes per second" in details and "750 ms" in details
    now[0] += 1  # the next second: one more, then the ratio (3 quotes per commit) stops a fourth
    await d.quote()
    with pytest.raises(grpc.aio.AioRpcError) as ratio:
        await d.quote()
    assert ratio.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ping:post ratio 3:1" in (ratio.value.details() or "")
    # Two commits: room for six quotes today, three more than were made.
    assert (await d.commit(first.quote_id)).outcome == pb.SOLD
    with pytest.raises(grpc.aio.AioRpcError):
        await d.quote()
    await d.commit(q.quote_id)
    now[0] += 1
    assert (await d.quote()).offered


async def test_stats_show_each_suppliers_win_rate_and_ping_post_ratio(
    buyers: BuyerServer, desk: Open
) -> None:
    buyers.on("a", ping=bid("50.00"), post=accept())
    d = await desk([buyer(buyers.url, "a")])
    won = await d.quote()
    await d.commit(won.quote_id)
    buyers.on("a", ping=bid("50.00"), post=reject())
    lost = await d.quote()
    assert (await d.commit(lost.quote_id)).outcome == pb.UNSOLD
    buyers.on("a", ping=bid("50.00", conditions={"expires_in_s": 0.2}))
    await d.quote()  # never committed: expired once past its expiry
    buyers.on("a", ping=bid("50.00"))
    await d.quote()  # still open
    buyers.on("a", ping=no_bid())
    await d.quote()  # no offer
    await asyncio.sleep(0.4)

    since = datetime.now(UTC) - timedelta(hours=1)
    window = Window("test", since, since + timedelta(hours=2))
    [src] = await Reports(d.ledger.engine).suppliers(window)

    assert (src.source_id, src.quotes, src.offers, src.won, src.lost, src.expired) == ("src-1", 5, 4, 1, 1, 1)
    shown = supplier_pb(src)
    assert (shown.win_rate, shown.ping_post_ratio) == ("0.2500", "2.50")


async def test_the_python_client_and_cli_quote_and_commit(
    buyers: BuyerServer, desk: Open, tmp_path: Path
) -> None:
    buyers.on("a", ping=bid("25.00"), post=accept("A-5"))
    inbound = {"margin": {"fixed": "4.00"}, "limits": {"per_day": 2}}
    d = await desk([buyer(buyers.url, "a")], inbound=inbound)
    target = f"127.0.0.1:{d.service.port}"

    async with AsyncRouteLeadClient(target, timeout_s=5) as client:
        q = await client.quote("solar", "src-1", PING)
        assert q.offered and q.price == Decimal("21.00") and q.expires_at is not None
        sold = await client.commit(q.quote_id, GOOD_LEAD)
        assert sold.sold and sold.cost == Decimal("21.00") and sold.margin == Decimal("4.00")

        ping_file, lead_file = tmp_path / "ping.json", tmp_path / "lead.json"
        ping_file.write_text(json.dumps({"flow": "solar", "source_id": "src-1", "fields": PING}))
        lead_file.write_text(json.dumps({"flow": "solar", "source_id": "src-1", "fields": GOOD_LEAD}))
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(cli_main, ["quote", str(ping_file), "--target", target], out, err)
        assert code == 0, err.getvalue()
        assert "→ $21.00, commit by" in out.getvalue()
        quote_id = out.getvalue().split()[1]
        code = await asyncio.to_thread(
            cli_main, ["commit", quote_id, str(lead_file), "--target", target], out, err
        )
        assert code == 0, err.getvalue()
        assert "SOLD to a at $25.00" in out.getvalue() and "cost $21.00" in out.getvalue()

        with pytest.raises(RateLimited) as limited:
            await client.quote("solar", "src-1", PING)
        assert limited.value.retry_after_s is not None and limited.value.retry_after_s > 0
        with pytest.raises(FailedPrecondition):
            await client.commit(quote_id, {**GOOD_LEAD, "zip": "94105"})


async def test_a_fallback_bid_whose_ping_id_expired_is_not_posted_at_commit(
    buyers: BuyerServer, desk: Open
) -> None:
    buyers.on("a", ping=bid("50.00"), post=reject("capacity"))
    buyers.on("b", ping=bid("45.00", conditions={"expires_in_s": 0.2}), post=accept())
    d = await desk([buyer(buyers.url, "a"), buyer(buyers.url, "b")])
    q = await d.quote()
    # Only the bids in the first post back the quote (and bound its expiry): a's bid has no bound.
    assert q.price == "40.00" and q.expires_in_ms > 50_000
    await asyncio.sleep(0.4)

    result = await d.commit(q.quote_id)

    assert result.outcome == pb.UNSOLD and [p.buyer for p in buyers.got(step="post")] == ["a"]
    b = next(a for a in result.attempts if a.buyer_id == "b")
    assert pb.AttemptStatus.Name(b.status) == "CONDITION_FAILED" and "expired" in b.reason


def test_a_bid_expiry_must_be_seconds() -> None:
    facts = Facts({}, 0.0)
    assert check_conditions({"expires_in_s": 30}, facts, None).failure is None
    assert check_conditions({"expires_in_s": "12.5"}, facts, None).failure is None
    for bad in ("soon", True, -1):
        assert "expires_in_s" in (check_conditions({"expires_in_s": bad}, facts, None).failure or "")
