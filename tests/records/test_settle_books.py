"""Reconciliation closes the loop: confirming an unsettled post books the sale in the ledger, and
the retry of its lead_id answers from the books (SOLD), never DUPLICATE at 0.00."""

from __future__ import annotations

import functools
from decimal import Decimal

import grpc
from routelead.api.server import Service
from routelead.api.state_admin import StateAdminServicer
from routelead.records.answers import past_answer
from routelead.state.memory import MemoryIdempotencyStore
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc
from routelead.v1 import state_admin_pb2 as spb
from routelead.v1 import state_admin_pb2_grpc as spb_grpc

from tests.buyers import BuyerServer, bid, hang
from tests.configs import GOOD_LEAD, buyer, compile_doc, document
from tests.records.conftest import Backend

TOKEN = "state-admin-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def test_settle_confirm_books_the_sale_and_the_retry_answers_it(
    backend: Backend, buyers: BuyerServer
) -> None:
    buyers.on("slow", ping=bid("50.00"), post=hang(30))  # the post times out: outcome unknown
    doc = document([buyer(buyers.url, "slow", post={"timeout_ms": 200})])  # with the flow's dedupe
    ledger = await backend.ledger()
    service = Service(compile_doc(doc), ledger=ledger)
    # As `serve` wires it: answers the process holds are checked against the books.
    assert isinstance(service.idempotency, MemoryIdempotencyStore)
    service.idempotency.recall([], functools.partial(past_answer, ledger.engine))
    service.extra_services = [StateAdminServicer(service.caps, dict, TOKEN, ledger).register]
    request = pb.RouteLeadRequest(lead_id="unknown-1", flow="solar", source_id="src-1", fields=GOOD_LEAD)
    await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = pb_grpc.RouteLeadStub(channel)
            admin = spb_grpc.StateAdminStub(channel)
            routed = await stub.RouteLead(request, timeout=10)
            before = await ledger.lead("unknown-1")
            [u] = (await admin.ListUnsettled(spb.ListUnsettledRequest(), metadata=AUTH)).reservations
            settled = await admin.Settle(
                spb.SettleRequest(buyer_id="slow", reservation_id=u.reservation_id, confirm=True),
                metadata=AUTH,
            )
            retried = await stub.RouteLead(request, timeout=10)
    finally:
        await service.stop(grace=0.5)

    # Not sold in the first answer: its outcome was unknown.
    assert routed.outcome == pb.UNSETTLED and [a.status for a in routed.attempts] == [pb.POST_ERROR]
    assert before.lead is not None and [s["settlement"] for s in before.sales] == ["unsettled"]
    assert settled.settled and settled.ledger == "sold"
    story = await ledger.lead("unknown-1")
    assert story.lead is not None and story.lead["outcome"] == "SOLD"
    assert story.lead["revenue"] == Decimal("50.00")
    assert [(s["buyer_id"], s["price"], s["settlement"]) for s in story.sales] == [
        ("slow", Decimal("50.00"), "sold")
    ]
    assert [(e["kind"], e["buyer_id"], e["amount"]) for e in story.entries if e["kind"] == "revenue"] == [
        ("revenue", "slow", Decimal("50.00"))
    ]
    # The retry is the books' answer: SOLD to the buyer that bought it, never DUPLICATE at 0.00.
    assert retried.replayed and retried.outcome == pb.SOLD
    assert [(s.buyer_id, s.price) for s in retried.sales] == [("slow", "50.00")]
    assert len(buyers.got("slow", "post")) == 1


async def test_a_post_whose_process_died_is_answered_from_its_intent_and_booked_when_confirmed(
    backend: Backend,
) -> None:
    """No record, only the intent (the process died during the post): the books answer the lead
    as an unsettled post; `settle-sale … sold` books it at the intent's price; freeing records it."""
    import time

    from routelead.records.intents import Intent

    ledger = await backend.ledger()
    now = time.time()
    for lead_id, buyer_id in (("dead-1", "a"), ("dead-2", "b")):
        intent = Intent(lead_id, 0, buyer_id, f"{lead_id}.r1", Decimal("41.07"), Decimal("10.00"), True,
                        "t1", "solar", "src-1", "v1", now)  # fmt: skip
        assert await ledger.offer(intent)
        # A second process reaching the same lead's first post is refused: the lead is taken.
        assert not await ledger.offer(intent)

    answer = await ledger.answer("dead-1")
    assert answer is not None and answer.outcome.value == "UNSETTLED"
    assert [(a.buyer_id, a.status.value, a.unsettled) for a in answer.attempts] == [("a", "POST_ERROR", True)]
    assert {i["lead_id"] for i in await ledger.open_intents()} == {"dead-1", "dead-2"}

    assert await ledger.settle_reservation("a", "dead-1.r1", sold=True) == ("dead-1", "sold")
    assert await ledger.settle("dead-2", "b", sold=False) == "rejected"
    assert await ledger.settle("dead-1", "a", sold=False) == "sold"  # settled is settled

    sold = await ledger.answer("dead-1")
    assert sold is not None and sold.outcome.value == "SOLD"
    assert [(s.buyer_id, s.price) for s in sold.sales] == [("a", Decimal("41.07"))]
    story = await ledger.lead("dead-1")
    assert story.lead is not None and (story.lead["revenue"], story.lead["cost"]) == (
        Decimal("41.07"),
        Decimal("10.00"),
    )
    assert sorted((e["kind"], e["amount"]) for e in story.entries) == [
        ("cost", Decimal("10.00")),
        ("revenue", Decimal("41.07")),
    ]
    freed = await ledger.answer("dead-2")
    assert freed is not None and freed.outcome.value == "UNSOLD" and not freed.sales
    assert await ledger.open_intents() == []
