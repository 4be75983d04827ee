"""Inbound quotes across two `routelead serve` processes sharing one throwaway Redis: the limits
count for both, and a quote made on one commits on the other (once)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, buyer, document
from tests.state.replicas import Replica, replicas, write_config

PING = {"state": "CA", "zip": "90210", "homeowner": "yes", "credit_range": "700+"}


async def _quote(r: Replica) -> tuple[Replica, pb.QuoteResponse | grpc.aio.AioRpcError]:
    try:
        got = await r.stub.Quote(pb.QuoteRequest(source_id="src-1", flow="solar", fields=PING), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return r, exc
    return r, got


async def test_quote_limits_hold_across_two_processes_and_a_commit_lands_on_either(
    redis_url: str, tmp_path: Path, buyers: BuyerServer
) -> None:
    buyers.on("a", ping=bid("50.00"), post=accept("A-1"))
    doc = document([buyer(buyers.url, "a")])
    doc["sources"][0] = {
        "id": "src-1",
        "cost": "10.00",
        "inbound": {"margin": {"fixed": "5.00"}, "limits": {"per_day": 5}},
    }
    one, two = await replicas(2, write_config(tmp_path, doc), redis_url)
    try:
        answers = await asyncio.gather(*(_quote(r) for _ in range(4) for r in (one, two)))

        offered = [(r, a) for r, a in answers if isinstance(a, pb.QuoteResponse)]
        refused = [a for _, a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert len(offered) == 5 and len(refused) == 3
        for exc in refused:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "5 quotes per day" in (exc.details() or "")
            assert int(dict(exc.trailing_metadata() or ())["retry-after-ms"]) > 0
        assert all(a.price == "45.00" for _, a in offered)

        made_on, quote = offered[0]
        other = two if made_on is one else one
        commit = pb.CommitRequest(quote_id=quote.quote_id, fields=GOOD_LEAD)
        sold = await other.stub.Commit(commit, timeout=5)
        again = await made_on.stub.Commit(commit, timeout=5)

        assert sold.outcome == pb.SOLD
        assert (sold.cost, sold.revenue, sold.margin) == ("45.00", "50.00", "5.00")
        assert again.replayed and [s.buyer_id for s in again.sales] == ["a"]
        assert len(buyers.got("a", "post")) == 1
    finally:
        await asyncio.gather(one.stop(), two.stop())
