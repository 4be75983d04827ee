"""What-if replay over recorded leads: candidate floors and tiers, exact revenue differences."""

from __future__ import annotations

import argparse
import asyncio
import copy
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import yaml
from routelead.api.server import Service
from routelead.cli import replay as replay_cli
from routelead.replay.engine import Comparison, compare_into
from routelead.replay.recorded import recorded_leads
from routelead.settings import load_settings
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, buyer, compile_doc, document
from tests.records.conftest import Backend
from tests.records.test_reports import route_leads


def recorded_doc(buyers: BuyerServer) -> dict[str, Any]:
    """The configuration `route_leads` routed with (the test buyer server's URLs)."""
    return document([buyer(buyers.url, x) for x in "abcde"], tiers=[["a", "b", "c", "e"], ["d"]], dedupe=None)


async def replay(backend_url: Any, engine: Any, doc: dict[str, Any]) -> Comparison:
    out = Comparison()
    now = datetime.now(UTC)
    async for lead in recorded_leads(engine, now - timedelta(hours=1), now + timedelta(minutes=1)):
        compare_into(out, compile_doc(doc), lead)
    return out


async def test_replay_with_a_raised_floor_and_a_reordered_tree(backend: Backend, buyers: BuyerServer) -> None:
    ledger = await backend.ledger()
    replies = await route_leads(ledger, buyers)
    live = [r for r in replies if not r.test]
    n = len(live)
    paid = sum(1 for r in live if r.source_id == "src-1")
    base = recorded_doc(buyers)

    same = await replay(backend.url, ledger.engine, base)
    # The recorded configuration reproduces what happened, to the cent.
    assert (same.candidate.sold, same.candidate.revenue, same.candidate.cost) == (
        same.actual.sold,
        same.actual.revenue,
        same.actual.cost,
    )
    assert same.actual.revenue == sum(Decimal(r.revenue) for r in live) == Decimal("33.33") * n
    assert same.unknowns.assumed_accepts == 0 and same.unknowns.unpinged == 0

    floor = copy.deepcopy(base)
    floor["flows"][0]["floor"] = "35.00"  # a (33.33) and d (12.34) fall below; b still rejects
    raised = await replay(backend.url, ledger.engine, floor)
    assert (raised.candidate.sold, raised.candidate.revenue) == (0, Decimal("0.00"))
    assert raised.candidate.revenue - raised.actual.revenue == Decimal("-33.33") * n
    # Unsold leads cost nothing (pay on sold): the margin lost is revenue minus the cost saved.
    assert raised.candidate.margin - raised.actual.margin == -(Decimal("33.33") * n - Decimal("10.00") * paid)

    tiers = copy.deepcopy(base)
    tiers["flows"][0]["tiers"] = [
        {"name": "t0", "buyers": ["d"]},
        {"name": "t1", "buyers": ["a", "b", "c", "e"]},
    ]
    reordered = await replay(backend.url, ledger.engine, tiers)
    # d was never posted: replay assumes it would take the lead at its recorded 12.34, and says so.
    assert reordered.candidate.revenue - reordered.actual.revenue == Decimal("-20.99") * n
    assert reordered.candidate.by_buyer == {
        "d": (n, Decimal("12.34") * n, Decimal("12.34") * n - Decimal("10.00") * paid)
    }
    assert reordered.unknowns.assumed_accepts == n

    newcomer = copy.deepcopy(base)
    newcomer["buyers"].append(buyer(buyers.url, "z"))
    newcomer["flows"][0]["tiers"][0]["buyers"].insert(0, "z")
    unknown = await replay(backend.url, ledger.engine, newcomer)
    assert unknown.unknowns.unpinged == n  # z has no recorded bid: left out, counted
    assert unknown.candidate.revenue == unknown.actual.revenue


async def test_a_buyer_pricing_rule_kept_in_the_candidate_counts_once(
    backend: Backend, buyers: BuyerServer
) -> None:
    buyers.on("a", ping=bid("30.00"), post=accept("A-1"))
    plus = [{"when": {"states": ["CA"]}, "add": "5.00"}]
    doc = document([buyer(buyers.url, "a", pricing=plus)], dedupe=None)
    ledger = await backend.ledger()
    async with (
        Service(compile_doc(doc), ledger=ledger) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        client = pb_grpc.RouteLeadStub(channel)
        for n in range(3):
            request = pb.RouteLeadRequest(lead_id=f"p-{n}", flow="solar", source_id="src-1", fields=GOOD_LEAD)
            reply = await client.RouteLead(request, timeout=10)
            assert reply.revenue == "35.00"

    same = await replay(backend.url, ledger.engine, doc)
    more = copy.deepcopy(doc)
    more["buyers"][0]["pricing"] = [{"when": {"states": ["CA"]}, "add": "7.00"}]
    changed = await replay(backend.url, ledger.engine, more)

    # Re-priced from the 30.00 the buyer offered, not from the 35.00 our rule made of it.
    assert (same.actual.revenue, same.candidate.revenue) == (Decimal("105.00"), Decimal("105.00"))
    assert changed.candidate.revenue == Decimal("111.00")


async def test_the_replay_command_prints_the_comparison(
    backend: Backend, buyers: BuyerServer, tmp_path: Path
) -> None:
    ledger = await backend.ledger()
    replies = await route_leads(ledger, buyers)
    n = sum(1 for r in replies if not r.test)
    doc = recorded_doc(buyers)
    doc["flows"][0]["floor"] = "35.00"
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(yaml.safe_dump(doc))
    settings = load_settings({"DATABASE_URL": backend.url})
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    args = argparse.Namespace(config=str(candidate), since=since, until=None, flow=None)
    out = io.StringIO()

    code = await asyncio.to_thread(replay_cli.run, args, settings, out)

    assert code == 0
    text = out.getvalue()
    lines = text.splitlines()
    revenue = next(line for line in lines if line.startswith("revenue ")).split()
    assert revenue == ["revenue", str(Decimal("33.33") * n), "0.00", str(Decimal("-33.33") * n)]
    sold = next(line for line in lines if line.startswith("sold ")).split()
    assert sold == ["sold", str(n), "0", f"-{n}"]
    row_a = next(line for line in lines if line.startswith("a ")).split()
    assert row_a[:3] == ["a", str(n), str(Decimal("33.33") * n)] and row_a[-1] == str(Decimal("-33.33") * n)
    assert "bids from buyers that were not pinged" in text and "PII" in text

    bad = argparse.Namespace(config=str(tmp_path / "missing.yaml"), since=None, until=None, flow=None)
    assert await asyncio.to_thread(replay_cli.run, bad, settings, io.StringIO()) == 2
