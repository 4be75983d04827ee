"""The ledger on both backends: schema, idempotent application, and agreement with the RPC answers."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from grpc_health.v1 import health_pb2, health_pb2_grpc
from routelead.api.server import Service
from routelead.records.codec import AttemptRecord, LeadRecord, SaleRecord, decode, encode
from routelead.records.db import head_revision, migrate
from routelead.records.ledger import Ledger
from routelead.records.schema import metadata
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, first_doing, no_bid, reject
from tests.configs import GOOD_LEAD, PII_VALUES, buyer, compile_doc, document
from tests.records.conftest import Backend


def a_lead(
    lead_id: str = "L-1", *, cost: str = "10.00", price: str = "45.10", at: float | None = None
) -> LeadRecord:
    at = time.time() if at is None else at
    sale = SaleRecord(lead_id, "b", Decimal(price), "B-9", True, "t1", "sold", at, "solar", "src-1")
    return LeadRecord(
        lead_id=lead_id,
        flow="solar",
        source_id="src-1",
        config_version="v-abc",
        received_at=at - 0.2,
        answered_at=at,
        outcome="SOLD",
        test=False,
        cost=Decimal(cost),
        revenue=Decimal(price),
        elapsed_ms=200.0,
        trace_id="0" * 31 + "1",
        ping_fields={"state": "CA", "zip": "90210"},
        attempts=(
            AttemptRecord(0, "a", "t1", "OUTBID", Decimal("30.00"), 12.5, 0.0, 200, "b won at 45.10"),
            AttemptRecord(1, "b", "t1", "POST_ACCEPTED", Decimal(price), 10.0, 20.0, 200, "sold at 45.10"),
        ),
        sales=(sale,),
    )


async def test_migrations_create_the_schema_the_code_uses(backend: Backend) -> None:
    ledger = await backend.ledger()

    again = await migrate(ledger.engine)  # a second start-up finds nothing to do

    assert again == head_revision()
    async with ledger.engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
        names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert diff == []
    assert {"leads", "attempts", "sales", "entries", "returns", "alembic_version"} <= names


async def test_a_record_applied_twice_changes_nothing_and_money_stays_exact(backend: Backend) -> None:
    ledger = await backend.ledger()
    records = [a_lead(f"L-{i}", cost="0.10", price="0.20") for i in range(30)]

    await ledger.apply(records)
    await ledger.apply(records)  # a redelivered outbox batch
    await ledger.apply([records[0].sales[0]])  # the same sale from the buyer's stream

    story = await ledger.lead("L-7")
    assert story.lead is not None and story.lead["margin"] == Decimal("0.10")
    assert story.lead["ping_fields"] == {"state": "CA", "zip": "90210"}
    assert [(a["buyer_id"], a["status"], a["bid"]) for a in story.attempts] == [
        ("a", "OUTBID", Decimal("30.00")),
        ("b", "POST_ACCEPTED", Decimal("0.20")),
    ]
    assert [(s["buyer_id"], s["price"], s["settlement"]) for s in story.sales] == [
        ("b", Decimal("0.20"), "sold")
    ]
    now = datetime.now(UTC)
    [total] = await ledger.totals("source", now - timedelta(hours=1), now + timedelta(hours=1))
    # 30 × 0.20 and 30 × 0.10 summed in SQL: exact, not 5.999999…
    assert (total.sales, total.gross_revenue, total.gross_cost, total.net_margin) == (
        30,
        Decimal("6.00"),
        Decimal("3.00"),
        Decimal("3.00"),
    )


def test_outbox_bytes_round_trip() -> None:
    record = a_lead()

    assert decode(encode(record)) == record
    assert decode(encode(record.sales[0])) == record.sales[0]


async def test_ledger_rows_agree_with_the_rpc_answers_to_the_cent(
    backend: Backend, buyers: BuyerServer
) -> None:
    buyers.on("a", ping=bid("33.33"), post=accept("A-1"))
    buyers.on("b", ping=bid("41.07"), post=reject("dupe"))
    buyers.on("c", ping=no_bid())
    buyers.on("d", ping=bid("12.34"), post=accept("D-1"))
    doc = document([buyer(buyers.url, x) for x in "abcd"], tiers=[["a", "b", "c"], ["d"]], dedupe=None)
    ledger = await backend.ledger()
    sources = ["src-1", "src-free"]
    async with (
        Service(compile_doc(doc), ledger=ledger) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        client = pb_grpc.RouteLeadStub(channel)

        async def one(n: int) -> pb.RouteLeadResponse:
            fields = {**GOOD_LEAD, "email": f"p{n}@example.com"}
            request = pb.RouteLeadRequest(
                lead_id=f"lead-{n}", flow="solar", source_id=sources[n % 2], fields=fields, test=n % 10 == 9
            )
            reply: pb.RouteLeadResponse = await client.RouteLead(request, timeout=10)
            return reply

        replies = await asyncio.gather(*(one(n) for n in range(40)))

    for reply in replies:
        # A test lead is booked under a key of its own, apart from a real lead with its id.
        story = await ledger.lead(("~" if reply.test else "") + reply.lead_id)
        assert story.lead is not None
        row = story.lead
        assert (row["outcome"], row["test"], row["config_version"]) == (
            pb.Outcome.Name(reply.outcome),
            reply.test,
            compile_doc(doc).version,
        )
        assert (str(row["cost"]), str(row["revenue"]), str(row["margin"])) == (
            reply.cost,
            reply.revenue,
            reply.margin,
        )
        assert [(a["buyer_id"], a["status"], str(a["bid"] or ""), a["reason"]) for a in story.attempts] == [
            (a.buyer_id, pb.AttemptStatus.Name(a.status), a.price, a.reason) for a in reply.attempts
        ]
        sold = [s for s in story.sales if s["settlement"] == "sold"]
        assert [(s["buyer_id"], str(s["price"]), str(s["cost"]), s["buyer_lead_id"]) for s in sold] == [
            (s.buyer_id, s.price, s.cost, s.buyer_lead_id) for s in reply.sales
        ]
        assert not any(v in str(row["ping_fields"]) for v in PII_VALUES)

    live = [r for r in replies if not r.test]
    now = datetime.now(UTC)
    totals = await ledger.totals("source", now - timedelta(hours=1), now + timedelta(hours=1))
    assert sum(t.gross_revenue for t in totals) == sum(Decimal(r.revenue) for r in live)
    assert sum(t.gross_cost for t in totals) == sum(Decimal(r.cost) for r in live)
    by_buyer = {
        t.key: t for t in await ledger.totals("buyer", now - timedelta(hours=1), now + timedelta(hours=1))
    }
    assert by_buyer["a"].sales == sum(1 for r in live for s in r.sales if s.buyer_id == "a") > 0
    assert "b" not in by_buyer  # it rejected every post: no revenue from it


async def test_no_answer_leaves_without_its_ledger_record(backend: Backend, buyers: BuyerServer) -> None:
    buyers.on("a", ping=bid("33.33"), post=accept("A-1"))
    doc = document([buyer(buyers.url, "a")], dedupe=None)
    ledger = await backend.ledger()
    async with (
        Service(compile_doc(doc), ledger=ledger) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        client = pb_grpc.RouteLeadStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def lead(lead_id: str) -> pb.RouteLeadRequest:
            return pb.RouteLeadRequest(lead_id=lead_id, flow="solar", source_id="src-1", fields=GOOD_LEAD)

        await backend.down()
        try:
            with pytest.raises(grpc.aio.AioRpcError) as unbooked:
                # Long before the SQLite lock wait (10 s) gives up: a stuck write is an outage.
                await client.RouteLead(lead("while-down"), timeout=6)
            pings = len(buyers.got("a", "ping"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.RouteLead(lead("next"), timeout=20)
            pinged_while_down = len(buyers.got("a", "ping")) - pings
            with pytest.raises(grpc.aio.AioRpcError) as still:
                await client.RouteLead(lead("while-down"), timeout=20)
            ready = health_pb2.HealthCheckRequest(service="routelead.v1.RouteLead")
            during = await health.Check(ready, timeout=5)
            alive = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        finally:
            await backend.up()
        retried = await client.RouteLead(lead("while-down"), timeout=20)
        later = await client.RouteLead(lead("after"), timeout=20)
        after = await health.Check(ready, timeout=5)

    # The caller never heard an answer before the books had it.
    assert unbooked.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry with the same lead_id" in (unbooked.value.details() or "")
    assert still.value.code() == grpc.StatusCode.UNAVAILABLE
    # Fail closed: while the books refuse writes, no new lead reaches a buyer.
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "nothing was routed" in (refused.value.details() or "")
    assert pinged_while_down == 0
    # Out of rotation (readiness), not restarted (liveness): a restart would drop the held record.
    assert during.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert alive.status == health_pb2.HealthCheckResponse.SERVING
    assert after.status == health_pb2.HealthCheckResponse.SERVING
    # No sale without a record: the books could not take the post's intent, so the post never
    # left. The retry gets the held answer (not offered), booked once, never routed again.
    assert retried.outcome == pb.UNSOLD and retried.replayed
    assert [(x.buyer_id, x.status) for x in retried.attempts] == [("a", pb.NOT_OFFERED)]
    assert "not posted" in retried.attempts[0].reason
    assert not [r for r in buyers.got("a", "post") if b"while-down" in r.body]
    story = await ledger.lead("while-down")
    assert story.lead is not None and story.lead["outcome"] == "UNSOLD" and not story.sales
    assert later.outcome == pb.SOLD and (await ledger.lead("after")).lead is not None


async def test_a_held_lead_is_booked_without_a_retry_once_the_books_are_back(
    backend: Backend, buyers: BuyerServer
) -> None:
    # The books go down while the post is at the buyer: its intent is committed, its record is not.
    buyers.on("a", ping=bid("21.00"), post=first_doing(backend.down, accept("A-1")))
    doc = document([buyer(buyers.url, "a")], dedupe=None)
    ledger = await backend.ledger()
    async with (
        Service(compile_doc(doc), ledger=ledger) as service,
        grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
    ):
        client = pb_grpc.RouteLeadStub(channel)
        request = pb.RouteLeadRequest(lead_id="left", flow="solar", source_id="src-1", fields=GOOD_LEAD)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await client.RouteLead(request, timeout=20)
        finally:
            await backend.up()
        story = await ledger.lead("left")
        for _ in range(300):  # the background retry backs off to 5 s at most
            if story.lead is not None:
                break
            await asyncio.sleep(0.1)
            story = await ledger.lead("left")
        replay = await client.RouteLead(request, timeout=20)

    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert story.lead is not None and [s["price"] for s in story.sales] == [Decimal("21.00")]
    assert replay.replayed and replay.outcome == pb.SOLD and len(buyers.got("a", "post")) == 1


async def test_a_sale_from_the_outbox_first_gets_its_cost_share_from_the_routers_write(
    backend: Backend,
) -> None:
    import dataclasses

    ledger = await backend.ledger()
    lead = a_lead("L-order")
    with_share = dataclasses.replace(lead.sales[0], cost=Decimal("10.00"))
    lead = dataclasses.replace(lead, sales=(with_share,))
    early = dataclasses.replace(with_share, cost=Decimal("0.00"))  # the cap commit does not know it

    await ledger.apply([early])
    await ledger.apply([lead])
    await ledger.apply([early])  # redelivered: changes nothing

    story = await ledger.lead("L-order")
    assert [(s["buyer_id"], s["price"], s["cost"]) for s in story.sales] == [
        ("b", Decimal("45.10"), Decimal("10.00"))
    ]


async def test_sqlite_checkpoints_run_in_the_background_not_inside_a_commit(tmp_path: Path) -> None:
    path = tmp_path / "books.db"
    ledger = await Ledger.open(f"sqlite:///{path}")
    try:
        await ledger.apply([a_lead(f"C-{i}") for i in range(5)])

        def in_main_file() -> int:
            # immutable=1 reads the database file alone, ignoring the WAL: rows appear there only
            # once a checkpoint has copied them (SQLite's own would wait for 1,000 WAL pages).
            with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as con:
                try:
                    return int(con.execute("SELECT count(*) FROM leads").fetchone()[0])
                except sqlite3.OperationalError:
                    return 0  # not even the schema has been copied yet

        async with asyncio.timeout(10):
            while await asyncio.to_thread(in_main_file) < 5:  # noqa: ASYNC110 (polls a file)
                await asyncio.sleep(0.1)
    finally:
        await ledger.close()
