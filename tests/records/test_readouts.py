"""What the books' command line says: cost shares per buyer, a second return, lead id prefixes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import yaml
from routelead.records.codec import LeadRecord, SaleRecord
from routelead.v1 import admin_pb2 as apb
from routelead.v1 import routelead_pb2 as pb

from tests.configs import buyer, compile_doc, document
from tests.records.conftest import ADMIN_AUTH, Backend, Replica, Start
from tests.records.test_ledger import a_lead
from tests.records.test_processes import _cli


def _shared(lead_id: str, cost: str, *sales: tuple[str, str, str]) -> LeadRecord:
    """A lead sold to several buyers, each sale with (buyer, price, cost share)."""
    base = a_lead(lead_id, cost=cost)
    at = base.answered_at
    return dataclasses.replace(
        base,
        revenue=sum((Decimal(p) for _, p, _ in sales), Decimal(0)),
        sales=tuple(
            SaleRecord(
                lead_id, b, Decimal(p), f"{b}-1", False, "t1", "sold", at, "solar", "src-1", cost=Decimal(c)
            )
            for b, p, c in sales
        ),
    )


def _config(tmp_path: Path, refund: bool = False) -> Path:
    doc = document(
        [
            buyer(
                lambda b, s: f"http://127.0.0.1:9/{b}/{s}", name, returns={"days": 3, "max_rate_percent": 100}
            )
            for name in ("a", "b")
        ]
    )
    if refund:
        for s in doc["sources"]:
            s["refund_cost_on_return"] = True
    path = tmp_path / "flows.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _rows(report: str) -> dict[str, list[str]]:
    lines = [line.split() for line in report.splitlines()]
    assert lines[0][:3] == ["buyer", "sales", "returns"], report
    return {row[0]: row[1:] for row in lines[1:]}


async def test_report_by_buyer_carries_each_sales_cost_share(backend: Backend, tmp_path: Path) -> None:
    ledger = await backend.ledger()
    # A shared lead: cost 10.00 split 6.00 / 4.00 in proportion to 30.00 / 20.00; and one of b's alone.
    await ledger.apply([_shared("S-1", "10.00", ("a", "30.00", "6.00"), ("b", "20.00", "4.00"))])
    await ledger.apply([_shared("S-2", "8.00", ("b", "25.00", "8.00"))])
    env = {**os.environ, "DATABASE_URL": backend.url}

    before = _cli("report", "--by", "buyer", env=env)
    returned = _cli(
        "return", "S-1", "a", "--reason", "wrong number", "--config", str(_config(tmp_path, True)), env=env
    )
    after = _cli("report", "--by", "buyer", env=env)

    assert before.returncode == 0, before.stderr
    # sales returns gross-rev net-rev gross-cost net-cost net-margin disputes
    assert _rows(before.stdout) == {
        "a": ["1", "0", "30.00", "30.00", "6.00", "6.00", "24.00", "0"],
        "b": ["2", "0", "45.00", "45.00", "12.00", "12.00", "33.00", "0"],
    }
    assert returned.returncode == 0, returned.stderr
    # The source refunded S-1's whole cost: both shares of it come back, each on its own buyer.
    assert _rows(after.stdout) == {
        "a": ["1", "1", "30.00", "0.00", "6.00", "0.00", "0.00", "0"],
        "b": ["2", "0", "45.00", "45.00", "12.00", "8.00", "37.00", "0"],
    }
    by_source = _cli("report", "--by", "source", env=env)
    [src] = [line.split() for line in by_source.stdout.splitlines()[1:]]
    assert src[5:7] == ["18.00", "8.00"]  # the buyers' shares add up to the source's cost


async def test_returning_a_returned_sale_says_when_and_books_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    ledger = await backend.ledger()
    await ledger.apply([a_lead("L-1", price="30.00", cost="5.00")])
    config = tmp_path / "flows.yaml"
    doc = document(
        [buyer(lambda b, s: f"http://127.0.0.1:9/{b}/{s}", "b", returns={"days": 3, "max_rate_percent": 100})]
    )
    config.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "DATABASE_URL": backend.url}

    first = _cli("return", "L-1", "b", "--reason", "wrong number", "--config", str(config), env=env)
    again = _cli("return", "L-1", "b", "--reason", "asked twice", "--config", str(config), env=env)

    assert first.returncode == 0 and "returned: revenue -30.00" in first.stdout, first.stderr
    [when] = [r["returned_at"] for r in (await ledger.lead("L-1")).returns]
    assert again.returncode == 3, (again.stdout, again.stderr)
    assert again.stdout == ""  # no "returned: revenue …" line for a return that booked nothing
    assert "already returned" in again.stderr and "wrong number" in again.stderr
    assert f"{when:%Y-%m-%d %H:%M:%S}" in again.stderr and "nothing booked" in again.stderr
    story = await ledger.lead("L-1")
    assert sorted(e["kind"] for e in story.entries) == ["cost", "revenue", "revenue_reversal"]


async def test_a_unique_prefix_names_a_lead_as_git_names_a_commit(backend: Backend, tmp_path: Path) -> None:
    ledger = await backend.ledger()
    await ledger.apply(
        [a_lead("4f17ea76fe23aa01"), a_lead("4f17ea99bb000002"), a_lead("4f1_x"), a_lead("zz10")]
    )
    env = {**os.environ, "DATABASE_URL": backend.url}

    unique = _cli("lead", "4f17ea76fe23", env=env)
    ambiguous = _cli("lead", "4f17ea", env=env)
    exact = _cli("lead", "zz10", env=env)
    too_short = _cli("lead", "4f1", env=env)
    wildcard = _cli("lead", "4f1_", env=env)  # `_` is a character of the id here, not a LIKE wildcard
    unknown = _cli("lead", "dead", env=env)
    settled = _cli("settle-sale", "4f17ea99", "b", "sold", env=env)

    assert unique.returncode == 0, unique.stderr
    assert unique.stdout.startswith("lead 4f17ea76fe23aa01 ")
    assert ambiguous.returncode == 1 and ambiguous.stdout == ""
    assert "prefix '4f17ea' is ambiguous" in ambiguous.stderr
    assert "4f17ea76fe23aa01" in ambiguous.stderr and "4f17ea99bb000002" in ambiguous.stderr
    assert exact.returncode == 0 and exact.stdout.startswith("lead zz10 ")
    assert too_short.returncode == 1 and "no lead '4f1'" in too_short.stderr
    assert wildcard.returncode == 0 and wildcard.stdout.startswith("lead 4f1_x "), wildcard.stderr
    assert unknown.returncode == 1 and "no lead 'dead'" in unknown.stderr
    assert settled.returncode == 0 and "settlement: sold" in settled.stdout, settled.stderr


async def test_a_paused_buyer_has_an_attempt_line_saying_who_paused_it_and_when(replicas: Start) -> None:
    r = await replicas()
    t0 = datetime.now(UTC)

    await r.admin.SetBuyerPaused(
        apb.SetBuyerPausedRequest(
            buyer_id="a", paused=True, change=apb.Change(author="ops-ana", reason="asked for a break")
        ),
        metadata=ADMIN_AUTH,
    )
    paused = await _until_version(r, "v2")
    await r.admin.SetBuyerPaused(
        apb.SetBuyerPausedRequest(
            buyer_id="a", paused=False, change=apb.Change(author="ops-ana", reason="back")
        ),
        metadata=ADMIN_AUTH,
    )
    resumed = await _until_version(r, "v3")

    lines = {a.buyer_id: a for a in paused.attempts}
    assert [s.buyer_id for s in paused.sales] == ["b"]
    assert pb.AttemptStatus.Name(lines["a"].status) == "PAUSED"
    stamps = {f"{t:%Y-%m-%d %H:%M}" for t in (t0, datetime.now(UTC))}
    assert lines["a"].reason in {f"paused by ops-ana at {s} UTC: asked for a break" for s in stamps}
    story = await r.ledger.lead(paused.lead_id)  # the books keep the line too
    assert [(x["buyer_id"], x["status"]) for x in story.attempts if x["buyer_id"] == "a"] == [("a", "PAUSED")]
    assert [s.buyer_id for s in resumed.sales] == ["a"]
    assert "PAUSED" not in {pb.AttemptStatus.Name(a.status) for a in resumed.attempts}


def test_a_buyer_disabled_in_the_file_reads_paused_without_a_who() -> None:
    doc = document([buyer(lambda b, s: f"http://127.0.0.1:9/{b}/{s}", n) for n in ("a", "b")])
    doc["buyers"][0]["enabled"] = False

    [tier] = compile_doc(doc).flows["solar"].tiers

    assert [b.id for b in tier.buyers] == ["b"]
    assert tier.paused == (("a", "paused: enabled: false in the configuration"),)


async def _until_version(r: Replica, version: str) -> pb.RouteLeadResponse:
    deadline = time.monotonic() + 5.0
    while r.service.config.version != version:
        assert time.monotonic() < deadline, f"{version} never went live"
        await asyncio.sleep(0.02)
    return await r.route()
