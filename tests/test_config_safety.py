"""Configuration cannot silently mean something else: what it says is what buyers receive and what
RouteLead does, or the file is refused with the path and the fix."""

from __future__ import annotations

from typing import Any

from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, LEAD_FIELDS, buyer, compile_doc, document
from tests.conftest import Start

S = pb.AttemptStatus


def by_buyer(reply: pb.RouteLeadResponse) -> dict[str, pb.Attempt]:
    return {a.buyer_id: a for a in reply.attempts}


def with_fields(doc: dict[str, Any], **fields: dict[str, Any]) -> dict[str, Any]:
    doc["lead"]["fields"] = {**LEAD_FIELDS, **fields}
    return doc


async def test_our_cost_and_internal_fields_leave_only_where_mapped_by_name(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("a", ping=bid(30), post=accept("A-1"))
    buyers.on("b", ping=bid(40), post=accept("B-1"))
    explicit = {
        "ping": {"fields": {"st": "state", "q": "lead_score"}},
        "post": {"fields": {"email": "email", "our_cost": "source_price", "score": "lead_score"}},
    }
    doc = with_fields(
        document([buyer(buyers.url, "a"), buyer(buyers.url, "b", **explicit)], max_buyers=2),
        source_price={"type": "decimal"},
        lead_score={"type": "int", "internal": True},
    )
    doc["sources"][0]["price_field"] = "source_price"
    h = await start(config=compile_doc(doc))

    reply = await h.route({**GOOD_LEAD, "source_price": "7.50", "lead_score": "88"})

    assert reply.outcome == pb.SOLD and sorted(s.buyer_id for s in reply.sales) == ["a", "b"]
    assert reply.cost == "7.50"  # the source's price is still what we pay
    for step in ("ping", "post"):
        sent = buyers.got("a", step)[0].json()
        assert not {"source_price", "lead_score"} & sent.keys(), f"default {step} leaked {sent}"
        assert "7.50" not in sent.values() and 88 not in sent.values()
    assert buyers.got("a", "post")[0].json()["email"] == GOOD_LEAD["email"]  # the rest still goes
    assert buyers.got("b", "ping")[0].json() == {"st": "CA", "q": 88}
    assert buyers.got("b", "post")[0].json() == {"email": GOOD_LEAD["email"], "our_cost": "7.50", "score": 88}

