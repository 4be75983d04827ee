"""Reports on both backends: real leads routed over loopback, reports checked against the raw rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
import sqlalchemy as sa
from routelead.api.server import Service
from routelead.records.ledger import Ledger
from routelead.records.reports import Reports, Window, by_day, date_range, last_hour, percentile, today
from routelead.records.schema import attempts, entries, leads
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, no_bid, reject, slow
from tests.configs import GOOD_LEAD, buyer, compile_doc, document
from tests.records.conftest import Backend

LEADS = 12


async def route_leads(ledger: Ledger, buyers: BuyerServer) -> list[pb.RouteLeadResponse]:
    """a bids 33.33 and takes every post; b outbids it at 41.07 but rejects every post; c never bids;
    e answers too late; d, in the second tier, bids but is never reached. Every 4th lead is a test lead."""
    buyers.on("a", ping=bid("33.33"), post=accept("A-1"))
    buyers.on("b", ping=bid("41.07"), post=reject("dupe"))
    buyers.on("c", ping=no_bid())
    buyers.on("e", ping=slow(1.0, bid("99.00")))
    buyers.on("d", ping=bid("12.34"), post=accept("D-1"))
    doc = document([buyer(buyers.url, x) for x in "abcde"], tiers=[["a", "b", "c", "e"], ["d"]], dedupe=None)
    sources = ["src-1", "src-free"]
    async with (
        Service(compile_doc(doc), ledger=ledger) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        client = pb_grpc.RouteLeadStub(channel)

        async def one(n: int) -> pb.RouteLeadResponse:
            fields = {**GOOD_LEAD, "email": f"p{n}@example.com"}
            request = pb.RouteLeadRequest(
                lead_id=f"lead-{n}", flow="solar", source_id=sources[n % 2], fields=fields, test=n % 4 == 3
            )
            reply: pb.RouteLeadResponse = await client.RouteLead(request, timeout=10)
            return reply

        return list(await asyncio.gather(*(one(n) for n in range(LEADS))))


def around_now() -> Window:
    now = datetime.now(UTC)
    return Window("test", now - timedelta(hours=1), now + timedelta(minutes=1))


async def test_reports_agree_to_the_cent_with_the_rows_they_come_from(
    backend: Backend, buyers: BuyerServer
) -> None:
    ledger = await backend.ledger()
    replies = await route_leads(ledger, buyers)
    live = [r for r in replies if not r.test]
    report = await Reports(ledger.engine).report(around_now())

    # Recount from the raw rows, in Python, independently of the report's SQL.
    async with ledger.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(attempts).join(leads, leads.c.lead_id == attempts.c.lead_id).where(~leads.c.test)
            )
        ).all()
        journal = (await conn.execute(sa.select(entries))).all()
    buyers_seen = {b.buyer_id: b for b in report.buyers}
    for b in "abcde":
        mine = [r for r in rows if r.buyer_id == b]
        r = buyers_seen[b]
        assert r.pings == len(mine) == len(live)
        bids = [x.bid for x in mine if x.status not in ("NO_BID", "TIMED_OUT", "ERROR") and x.bid]
        assert r.bids == len(bids)
        assert r.bid_total == sum(bids, Decimal("0"))
        assert r.revenue == sum((e.amount for e in journal if e.buyer_id == b), Decimal("0"))
        times = sorted(x.ping_ms for x in mine)
        assert (r.p50_ms, r.p99_ms) == (percentile(times, 50), percentile(times, 99))
    a, b_, c, e = (buyers_seen[x] for x in "abce")
    n = len(live)
    assert (a.bids, a.wins, a.posts, a.accepted, str(a.avg_bid), str(a.win_rate)) == (
        n,
        n,
        n,
        n,
        "33.33",
        "1.0000",
    )
    assert str(a.revenue) == str(Decimal("33.33") * n) == str(sum(Decimal(x.revenue) for x in live))
    assert (b_.posts, b_.accepted, str(b_.post_accept_rate), b_.revenue) == (n, 0, "0.0000", Decimal("0.00"))
    assert (c.bids, str(c.bid_rate)) == (0, "0.0000")
    assert (e.timeouts, e.bids) == (n, 0) and e.p50_ms >= 300
    d = buyers_seen["d"]  # pinged with everyone; its tier was never reached
    assert (d.pings, d.bids, d.wins, d.posts, str(d.win_rate)) == (n, n, 0, 0, "0.0000")

    [flow] = report.flows
    assert (flow.key, flow.leads, flow.sold) == ("solar", n, n)
    assert flow.revenue == sum(Decimal(x.revenue) for x in live)
    assert flow.cost == sum(Decimal(x.cost) for x in live)
    assert flow.margin == sum(Decimal(x.margin) for x in live)
    sources = {s.key: s for s in report.sources}
    paid = [x for x in live if x.source_id == "src-1"]
    assert sources["src-1"].cost == Decimal("10.00") * len(paid)
    assert str(sources["src-1"].revenue_per_ping) == "33.33"
    # margin % = (33.33 - 10.00) / 33.33 = 69.997 %
    assert str(sources["src-1"].margin_pct) == "70.00"
    assert str(sources["src-free"].margin_pct) == "100.00"
    # The journal totals agree with the ledger's own totals.
    totals = await ledger.totals("flow", report.window.since, report.window.until)
    assert [(t.key, t.net_revenue, t.net_cost) for t in totals] == [("solar", flow.revenue, flow.cost)]


async def test_windows_split_by_day_and_leave_out_what_is_outside(backend: Backend) -> None:
    from tests.records.test_ledger import a_lead

    ledger = await backend.ledger()
    day1 = datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()
    day2 = datetime(2026, 3, 2, 23, 59, tzinfo=UTC).timestamp()
    await ledger.apply([a_lead("L-1", at=day1), a_lead("L-2", at=day2, price="20.05", cost="5.00")])
    reports = Reports(ledger.engine)

    days = [(await reports.money("flow", w)) for w in by_day(date(2026, 3, 1), date(2026, 3, 3))]
    both = await reports.money("flow", date_range(date(2026, 3, 1), date(2026, 3, 2)))

    assert [[(m.leads, str(m.revenue), str(m.margin)) for m in d] for d in days] == [
        [(1, "45.10", "35.10")],
        [(1, "20.05", "15.05")],
        [],
    ]
    assert [(m.leads, m.sold, str(m.revenue), str(m.cost), str(m.margin_pct)) for m in both] == [
        (2, 2, "65.15", "15.00", "76.98")
    ]
    [bb] = await reports.buyers(date_range(date(2026, 3, 2), date(2026, 3, 2)), "b")
    assert (bb.pings, bb.wins, str(bb.avg_bid), str(bb.revenue)) == (1, 1, "20.05", "20.05")
    now = datetime(2026, 3, 2, 23, 59, 30, tzinfo=UTC)
    assert (await reports.money("flow", last_hour(now)))[0].leads == 1
    assert today(now).since == datetime(2026, 3, 2, tzinfo=UTC)
    with pytest.raises(ValueError, match="before the first"):
        date_range(date(2026, 3, 2), date(2026, 3, 1))
