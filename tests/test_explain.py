"""Why each losing bid lost: priority, score, rotation, waterfall order, allocation or a lower bid.

End to end over gRPC with real buyer servers, then the pure explanation for the cases that need
a particular allocation to reach.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from routelead.domain.explain import Standing, TierRule, why_lost
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, buyer, compile_doc, document
from tests.conftest import Start

S = pb.AttemptStatus


def by_buyer(reply: pb.RouteLeadResponse) -> dict[str, pb.Attempt]:
    return {a.buyer_id: a for a in reply.attempts}


async def _one_tier(start: Start, buyers: list[dict[str, Any]], tier: dict[str, Any], **flow: Any) -> Any:
    doc = document(buyers, **flow)
    doc["flows"][0]["tiers"] = [{"name": "t1", "buyers": [b["id"] for b in buyers], **tier}]
    return await start(config=compile_doc(doc))


async def test_a_higher_bid_ranked_below_by_priority_says_priority(buyers: BuyerServer, start: Start) -> None:
    buyers.on("small", ping=bid(25), post=accept())
    buyers.on("big", ping=bid(100), post=accept())
    h = await _one_tier(
        start,
        [buyer(buyers.url, "small", priority=9), buyer(buyers.url, "big", priority=1)],
        {"order": "priority"},
    )

    reply = await h.route()

    assert [s.buyer_id for s in reply.sales] == ["small"]
    big = by_buyer(reply)["big"]
    assert big.status == S.OUTBID
    assert big.reason == "ranked below by priority: 9 for small at 25.00, against 1 for this bid at 100.00"


async def test_a_higher_bid_ranked_below_by_score_says_score(buyers: BuyerServer, start: Start) -> None:
    buyers.on("slowpay", ping=bid(100), post=accept())
    buyers.on("fastpay", ping=bid(90), post=accept())
    h = await start(
        [buyer(buyers.url, "slowpay", payment_days=365), buyer(buyers.url, "fastpay", payment_days=0)],
        ranking="score",
    )

    reply = await h.route()

    # 0.5 x 90/100 + 0.3 x 0.9 + 0.2 x 1 = 0.92 against 0.5 + 0.27 + 0.2 x 30/395 = 0.785
    assert [s.buyer_id for s in reply.sales] == ["fastpay"]
    assert by_buyer(reply)["slowpay"].reason == (
        "ranked below by score: 0.920 for fastpay at 90.00, against 0.785 for this bid at 100.00"
    )


async def test_a_higher_bid_passed_over_by_rotation_says_rotation(buyers: BuyerServer, start: Start) -> None:
    buyers.on("low", ping=bid(25), post=accept())
    buyers.on("high", ping=bid(100), post=accept())
    h = await _one_tier(
        start, [buyer(buyers.url, "low"), buyer(buyers.url, "high")], {"order": "round_robin"}
    )

    replies = [await h.route(GOOD_LEAD | {"email": f"r{n}@example.com"}) for n in range(2)]

    # Turns alternate who goes first; the lead where `low` went first is the one to read.
    [reply] = [r for r in replies if r.sales[0].buyer_id == "low"]
    assert by_buyer(reply)["high"].status == S.OUTBID
    assert by_buyer(reply)["high"].reason == (
        "ranked below by rotation: this lead's round-robin turn offered low at 25.00 "
        "before this bid at 100.00"
    )


async def test_a_bid_the_waterfall_never_reached_says_so(buyers: BuyerServer, start: Start) -> None:
    buyers.on("first", ping=bid(15), post=accept())
    buyers.on("second", ping=bid(99), post=accept())
    h = await _one_tier(
        start,
        [buyer(buyers.url, "first", priority=5), buyer(buyers.url, "second", priority=1)],
        {"mode": "waterfall"},
    )

    reply = await h.route()

    assert by_buyer(reply)["second"].reason == (
        "not reached in the waterfall: first at 15.00 came first (priority 5 against 1) and bought"
    )


async def test_a_lower_bid_says_lower_bid(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(40), post=accept())
    buyers.on("b", ping=bid(30), post=accept())
    h = await start([buyer(buyers.url, "a"), buyer(buyers.url, "b")])

    reply = await h.route()

    assert by_buyer(reply)["b"].reason == "lower bid: a at 40.00, against this bid at 30.00"


# --- the pure explanation, for allocations that take more set-up to reach over the wire -------

AUCTION = [TierRule("t1", "auction", "bid"), TierRule("t2", "auction", "bid")]


def at(buyer_id: str, price: str, place: int = 0, tier: int = 0, **kw: Any) -> Standing:
    fields: dict[str, Any] = {"priority": 0, "exclusive": False, "value": Decimal(price)} | kw
    return Standing(buyer_id, tier, place, Decimal(price), **fields)


def test_an_exclusive_bid_beaten_by_a_shared_sale_worth_more_together() -> None:
    winners = [at("s1", "30.00"), at("s2", "25.00", 1)]

    why = why_lost(at("excl", "50.00", 2, exclusive=True), winners, AUCTION, "price", 2)

    assert why == (
        "exclusive bid at 50.00: the shared sale to s1 at 30.00, s2 at 25.00 was worth more together "
        "(55.00 against 50.00)"
    )


def test_a_shared_bid_left_out_when_every_place_is_taken() -> None:
    winners = [at("s1", "30.00"), at("s2", "25.00", 1)]

    why = why_lost(at("s3", "10.00", 2), winners, AUCTION, "price", 2)

    assert why == (
        "all 2 shared places went to bids ranked above it (s1 at 30.00, s2 at 25.00); "
        "lower bid: s2 at 25.00, against this bid at 10.00"
    )


def test_ties_are_broken_by_priority_then_tier_order_and_say_so() -> None:
    w = at("a", "40.00", priority=5)

    assert why_lost(at("b", "40.00", 1, priority=1), [w], AUCTION, "price", 1) == (
        "an equal bid, then ranked below by priority: 5 for a at 40.00, against 1 for this bid at 40.00"
    )
    assert why_lost(at("c", "40.00", 2, priority=5), [w], AUCTION, "price", 1) == (
        "an equal bid and priority: a at 40.00 comes first in the tier"
    )


def test_a_lower_tier_was_not_needed_and_expected_revenue_names_itself() -> None:
    w = at("a", "40.00", value=Decimal("36.00"))

    assert why_lost(at("c", "90.00", tier=1), [w], AUCTION, "price", 1) == (
        "not needed: sold in tier 't1' to a at 40.00"
    )
    assert why_lost(at("b", "60.00", 1, value=Decimal("30.00")), [w], AUCTION, "expected_revenue", 1) == (
        "ranked below by expected revenue (bid x post-accept rate): 36.00 for a at 40.00, "
        "against 30.00 for this bid at 60.00"
    )
