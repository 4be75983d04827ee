"""GetStats over a real gRPC channel with the admin token, and `routelead stats` printing it."""

from __future__ import annotations

import argparse
import asyncio
import io
from decimal import Decimal

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from routelead.api.server import Service
from routelead.api.stats import StatsServicer
from routelead.cli import stats as stats_cli
from routelead.records.reports import Reports
from routelead.settings import load_settings
from routelead.v1 import stats_pb2 as spb
from routelead.v1 import stats_pb2_grpc as spb_grpc

from tests.buyers import BuyerServer, accept, bid
from tests.configs import buyer, compile_doc, document
from tests.records.conftest import Backend
from tests.records.test_reports import route_leads

TOKEN = "stats-admin-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def test_get_stats_needs_the_admin_token_and_matches_the_books(
    backend: Backend, buyers: BuyerServer
) -> None:
    ledger = await backend.ledger()
    replies = await route_leads(ledger, buyers)
    live = [r for r in replies if not r.test]
    buyers.on("a", ping=bid("1.00"), post=accept())
    stats = StatsServicer(Reports(ledger.engine), TOKEN)
    doc = document([buyer(buyers.url, "a")], dedupe=None)
    async with (
        Service(compile_doc(doc), ledger=ledger, extra_services=[stats.register]) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        stub = spb_grpc.StatsStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.GetStats(spb.GetStatsRequest(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await stub.GetStats(spb.GetStatsRequest(), metadata=(("authorization", "Bearer nope"),))
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.GetStats(spb.GetStatsRequest(window="range", from_date="2026-13-01"), metadata=AUTH)
        got = await stub.GetStats(spb.GetStatsRequest(window="today"), metadata=AUTH, timeout=10)
        one = await stub.GetStats(spb.GetStatsRequest(buyer_id="b", flow="none"), metadata=AUTH)

        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name async for r in call for s in r.list_services_response.service}

        settings = load_settings({"ROUTELEAD_ADMIN_TOKEN": TOKEN})
        out = io.StringIO()
        parser = argparse.ArgumentParser()
        stats_cli.add_parsers(parser.add_subparsers(), settings)
        args = parser.parse_args(["stats", "--target", f"127.0.0.1:{service.port}"])
        code = await asyncio.to_thread(stats_cli.run, args, settings, out)

    assert denied.value.code() == wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "YYYY-MM-DD" in (
        bad.value.details() or ""
    )
    assert "routelead.v1.Stats" in names
    [w] = got.windows
    a = {b.buyer_id: b for b in w.buyers}["a"]
    n = len(live)
    assert (a.pings, a.wins, a.avg_bid, a.post_accept_rate) == (n, n, "33.33", "1.0000")
    assert a.revenue == str(Decimal("33.33") * n)
    [flow] = w.flows
    assert (flow.key, flow.leads, flow.sold) == ("solar", n, n)
    assert Decimal(flow.margin) == sum(Decimal(r.margin) for r in live)
    assert [b.buyer_id for b in one.windows[0].buyers] == ["b"] and not one.windows[0].flows

    assert code == 0
    text = out.getvalue()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("buyer "))
    assert header.split() == ["buyer", "pings", "bids", "bid%", "avg", "bid", "wins", "win%", "posts",
                              "accept%", "p50", "ms", "p95", "ms", "p99", "ms", "timeouts", "errors",
                              "revenue", "disputes"]  # fmt: skip
    row_a = next(line for line in lines if line.startswith("a ")).split()
    assert row_a[:6] == ["a", str(n), str(n), "100.0", "33.33", str(n)] and row_a[-2:] == [a.revenue, "0"]
    row_b = next(line for line in lines if line.startswith("b ")).split()
    assert row_b[8] == "0.0" and row_b[-2] == "0.00"  # every post rejected
    solar = next(line for line in lines if line.startswith("solar ")).split()
    assert solar == ["solar", str(n), str(n), flow.revenue_per_ping, flow.cost, flow.revenue, flow.margin,
                     flow.margin_pct]  # fmt: skip
