"""Ping trees end to end over loopback: tiers, modes, orders, filters, schedules, floors, shared sales."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid, no_bid, reject, respond, slow
from tests.configs import GOOD_LEAD, buyer, fixed_buyer
from tests.conftest import Start

S = pb.AttemptStatus
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def by_buyer(reply: pb.RouteLeadResponse) -> dict[str, pb.Attempt]:
    return {a.buyer_id: a for a in reply.attempts}


def lead(n: int) -> dict[str, str]:
    return GOOD_LEAD | {"email": f"lead{n}@example.com"}


async def test_the_seed_001_three_tier_example(buyers: BuyerServer, start: Start) -> None:
    """Tier 1: $48 premium at its daily cap, skipped unpinged. Tier 2: $35 asked first, declines
    (outside its ZIP area); $32 accepts. Tier 3: the $18 catch-all is never contacted."""
    buyers.on("premium", ping=bid(48), post=accept("P-1"))
    buyers.on("b35", ping=bid(35), post=reject("lead outside our ZIP code area"))
    buyers.on("b32", ping=bid(32), post=accept("B32-7"))
    buyers.on("catchall", post=accept())
    h = await start(
        [
            buyer(buyers.url, "premium", caps={"day": 1}),
            buyer(buyers.url, "b35"),
            buyer(buyers.url, "b32"),
            fixed_buyer(buyers.url, "catchall", "18.00"),
        ],
        tiers=[["premium"], ["b35", "b32"], ["catchall"]],
        floor="10.00",
    )
    earlier = await h.route(lead(0))  # the premium buyer's one lead for today
    assert earlier.sales[0].buyer_id == "premium"
    buyers.received.clear()

    reply = await h.route(lead(1) | {"state": "CA"})

    assert reply.outcome == pb.SOLD
    assert [(s.buyer_id, s.price, s.buyer_lead_id) for s in reply.sales] == [("b32", "32.00", "B32-7")]
    assert reply.revenue == "32.00"
    a = by_buyer(reply)
    assert [x.buyer_id for x in reply.attempts] == ["premium", "b35", "b32", "catchall"]
    assert a["premium"].status == S.SKIPPED_CAP and "cap reached" in a["premium"].reason
    assert a["b35"].status == S.POST_REJECTED and "outside our ZIP code area" in a["b35"].reason
    assert a["b32"].status == S.POST_ACCEPTED
    assert a["catchall"].status == S.OUTBID and "not needed: sold in tier 't2'" in a["catchall"].reason
    assert buyers.got("premium") == [] and buyers.got("catchall") == []
    posts = [r.buyer for r in buyers.got(step="post")]
    assert posts == ["b35", "b32"]  # the $35 buyer was asked first


async def test_a_filtered_buyer_is_not_pinged_and_says_which_rule(buyers: BuyerServer, start: Start) -> None:
    buyers.on("tx_only", ping=bid(90))
    buyers.on("ok", ping=bid(20), post=accept())
    h = await start(
        [
            buyer(
                buyers.url,
                "tx_only",
                filter={"all": [{"field": "homeowner", "equals": True}, {"states": ["TX"]}]},
            ),
            buyer(buyers.url, "ok", filter={"field": "zip", "zip_prefix": ["902"]}),
        ]
    )

    reply = await h.route()

    assert by_buyer(reply)["tx_only"].status == S.SKIPPED_FILTER
    assert by_buyer(reply)["tx_only"].reason == "filter: state not in [TX]"
    assert buyers.got("tx_only") == []
    assert reply.sales[0].buyer_id == "ok"


async def test_a_closed_buyer_is_skipped_by_schedule(buyers: BuyerServer, start: Start) -> None:
    today = datetime.now(UTC).date()
    off = [str(today + timedelta(days=d)) for d in (-1, 0, 1)]
    buyers.on("closed", ping=bid(90))
    buyers.on("open", ping=bid(20), post=accept())
    h = await start(
        [
            buyer(buyers.url, "closed", schedule={"dates_off": off}),
            buyer(buyers.url, "open", schedule={"hours": dict.fromkeys(WEEK, "00:00-23:59")}),
        ]
    )

    reply = await h.route()

    assert by_buyer(reply)["closed"].status == S.SKIPPED_SCHEDULE
    assert "day off" in by_buyer(reply)["closed"].reason
    assert buyers.got("closed") == []
    assert reply.sales[0].buyer_id == "open"


async def _waterfall(buyers: BuyerServer, start: Start, strategy: str) -> pb.RouteLeadResponse:
    from tests.configs import compile_doc, document

    doc = document(
        [
            buyer(buyers.url, "first", priority=9),
            buyer(buyers.url, "second", priority=5),
            buyer(buyers.url, "third", priority=1),
        ],
        ping_strategy=strategy,
    )
    doc["flows"][0]["tiers"] = [{"name": "wf", "mode": "waterfall", "buyers": ["third", "second", "first"]}]
    h = await start(config=compile_doc(doc))
    return await h.route()


async def test_waterfall_tier_by_tier_pings_only_until_someone_accepts(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("first", ping=bid(20), post=reject("full today"))
    buyers.on("second", ping=bid(15), post=accept("S-2"))
    buyers.on("third", ping=bid(99), post=accept())

    reply = await _waterfall(buyers, start, "tier_by_tier")

    assert [(s.buyer_id, s.price) for s in reply.sales] == [("second", "15.00")]  # priority, not price
    a = by_buyer(reply)
    assert a["first"].status == S.POST_REJECTED
    assert a["second"].status == S.POST_ACCEPTED
    assert a["third"].status == S.OUTBID
    assert (
        a["third"].reason
        == "not reached in the waterfall: second at 15.00 came first (priority 5 against 1) and bought"
    )
    assert buyers.got("third") == []  # never pinged: the waterfall stopped before it
    assert [r.buyer for r in buyers.received] == ["first", "first", "second", "second"]


async def test_waterfall_all_at_once_pings_together_but_offers_in_order(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("first", ping=no_bid())
    buyers.on("second", ping=bid(15), post=accept())
    buyers.on("third", ping=bid(99), post=accept())

    reply = await _waterfall(buyers, start, "all_at_once")

    assert reply.sales[0].buyer_id == "second"
    assert by_buyer(reply)["third"].status == S.OUTBID
    assert len(buyers.got("third", "ping")) == 1 and buyers.got("third", "post") == []


async def test_tier_by_tier_pings_a_lower_tier_only_when_needed(buyers: BuyerServer, start: Start) -> None:
    buyers.on("top", ping=bid(40), post=accept())
    buyers.on("low", ping=bid(90), post=accept())
    h = await start(
        [buyer(buyers.url, "top"), buyer(buyers.url, "low")],
        tiers=[["top"], ["low"]],
        ping_strategy="tier_by_tier",
    )

    sold_high = await h.route(lead(1))
    buyers.on("top", ping=no_bid())
    sold_low = await h.route(lead(2))

    assert sold_high.sales[0].buyer_id == "top"
    assert sold_low.sales[0].buyer_id == "low"
    assert len(buyers.got("low", "ping")) == 1  # only for the second lead


async def test_round_robin_rotates_the_first_offer(buyers: BuyerServer, start: Start) -> None:
    for name in ("a", "b", "c"):
        buyers.on(name, ping=bid(30), post=accept())
    from tests.configs import compile_doc, document

    doc = document([buyer(buyers.url, n) for n in "abc"])
    doc["flows"][0]["tiers"][0]["order"] = "round_robin"
    h = await start(config=compile_doc(doc))

    winners = [(await h.route(lead(i))).sales[0].buyer_id for i in range(9)]

    assert Counter(winners) == {"a": 3, "b": 3, "c": 3}
    assert winners[:3] == ["a", "b", "c"]


async def test_weighted_order_shares_leads_by_weight(buyers: BuyerServer, start: Start) -> None:
    from tests.configs import compile_doc, document

    for name in ("big", "small"):
        buyers.on(name, ping=bid(30), post=accept())
    doc = document([buyer(buyers.url, "big"), buyer(buyers.url, "small")])
    doc["flows"][0]["tiers"][0] |= {"order": "weighted", "weights": {"big": 3}}
    h = await start(config=compile_doc(doc))

    winners = Counter([(await h.route(lead(i))).sales[0].buyer_id for i in range(8)])

    assert winners == {"big": 6, "small": 2}


async def test_priority_order_beats_price_inside_a_tier(buyers: BuyerServer, start: Start) -> None:
    from tests.configs import compile_doc, document

    buyers.on("partner", ping=bid(20), post=accept())
    buyers.on("rich", ping=bid(80), post=accept())
    doc = document([buyer(buyers.url, "partner", priority=10), buyer(buyers.url, "rich")])
    doc["flows"][0]["tiers"][0]["order"] = "priority"
    h = await start(config=compile_doc(doc))

    reply = await h.route()

    assert reply.sales[0].buyer_id == "partner"


async def test_bid_conditions_the_lead_fails_discard_the_bid(buyers: BuyerServer, start: Start) -> None:
    buyers.on("texan", ping=bid(90, conditions={"states": ["TX"]}))
    buyers.on("fussy", ping=bid(80, conditions={"require_consent": True}))
    buyers.on("ok", ping=bid(20, conditions={"states": ["CA"], "max_age": 10}), post=accept())
    h = await start([buyer(buyers.url, n) for n in ("texan", "fussy", "ok")])

    reply = await h.route()

    a = by_buyer(reply)
    assert a["texan"].status == S.CONDITION_FAILED and a["texan"].reason == "bid limited to states [TX]"
    assert a["fussy"].status == S.CONDITION_FAILED and "consent" in a["fussy"].reason
    assert reply.sales[0].buyer_id == "ok"


async def test_a_tier_floor_lets_a_catch_all_buy_at_its_minimum(buyers: BuyerServer, start: Start) -> None:
    from tests.configs import compile_doc, document

    buyers.on("cheap", ping=bid(12))
    buyers.on("catchall", post=accept())
    doc = document([buyer(buyers.url, "cheap"), fixed_buyer(buyers.url, "catchall", "8.00")], floor="15.00")
    doc["flows"][0]["tiers"] = [{"name": "main", "buyers": ["cheap"]},
                                {"name": "catch-all", "buyers": ["catchall"], "floor": "5.00"}]  # fmt: skip
    h = await start(config=compile_doc(doc))

    reply = await h.route()

    assert by_buyer(reply)["cheap"].status == S.BELOW_FLOOR
    assert "below the floor 15.00" in by_buyer(reply)["cheap"].reason
    assert [(s.buyer_id, s.price) for s in reply.sales] == [("catchall", "8.00")]


async def test_exclusive_and_dynamic_floors(buyers: BuyerServer, start: Start) -> None:
    buyers.on("excl", ping=bid(60, exclusive=True))
    buyers.on("shared", ping=bid(30), post=accept())
    h = await start(
        [buyer(buyers.url, "excl"), buyer(buyers.url, "shared")],
        floor="20.00",
        exclusive_floor="50.00",
        max_buyers=2,
        dynamic_floor={
            "quality": [{"when": {"field": "credit_range", "equals": "700+"}, "multiplier": "1.5"}]
        },
    )

    reply = await h.route()

    a = by_buyer(reply)
    assert a["excl"].status == S.BELOW_FLOOR and "exclusive floor 75.00" in a["excl"].reason
    assert [(s.buyer_id, s.exclusive) for s in reply.sales] == [("shared", False)]  # 30 >= 20 x 1.5


async def test_shared_sale_beats_a_smaller_exclusive_bid_and_posts_in_parallel(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("excl", ping=bid(50, exclusive=True), post=accept())
    buyers.on("s1", ping=bid(30), post=slow(0.2, accept("S1")))
    buyers.on("s2", ping=bid(25), post=slow(0.2, accept("S2")))
    buyers.on("s3", ping=bid(10), post=accept("S3"))
    h = await start([buyer(buyers.url, n) for n in ("excl", "s1", "s2", "s3")], max_buyers=2)

    reply = await h.route()

    assert sorted((s.buyer_id, s.price, s.exclusive) for s in reply.sales) == [
        ("s1", "30.00", False),
        ("s2", "25.00", False),
    ]
    assert (reply.revenue, reply.margin) == ("55.00", "45.00")
    assert by_buyer(reply)["excl"].status == S.OUTBID
    assert by_buyer(reply)["s3"].status == S.OUTBID
    # Parallel: two 200 ms posts finished well inside one 750 ms deadline with time to spare.
    assert reply.elapsed_ms < 600


async def test_an_exclusive_bid_worth_more_is_sold_alone(buyers: BuyerServer, start: Start) -> None:
    buyers.on("excl", ping=bid(90, exclusive=True), post=accept("X"))
    buyers.on("s1", ping=bid(30), post=accept())
    buyers.on("s2", ping=bid(25), post=accept())
    h = await start([buyer(buyers.url, n) for n in ("excl", "s1", "s2")], max_buyers=3)

    reply = await h.route()

    assert [(s.buyer_id, s.exclusive) for s in reply.sales] == [("excl", True)]
    assert buyers.got("s1", "post") == [] and buyers.got("s2", "post") == []
    assert "sold exclusively to excl" in by_buyer(reply)["s1"].reason


async def test_a_rejected_shared_post_frees_its_slot_for_the_next_bid(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("s1", ping=bid(30), post=accept())
    buyers.on("s2", ping=bid(25), post=reject("dupe"))
    buyers.on("s3", ping=bid(20), post=accept())
    buyers.on("excl", ping=bid(45, exclusive=True), post=accept())
    h = await start([buyer(buyers.url, n) for n in ("s1", "s2", "s3", "excl")], max_buyers=2)

    reply = await h.route()

    assert sorted(s.buyer_id for s in reply.sales) == ["s1", "s3"]
    assert buyers.got("excl", "post") == []  # never sold exclusively once shared sales exist


async def test_expected_revenue_ranking_stops_rewarding_buyers_who_reject(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("flaky", ping=bid(50), post=reject("changed our mind"))
    buyers.on("steady", ping=bid(40), post=accept())
    h = await start([buyer(buyers.url, "flaky"), buyer(buyers.url, "steady")], ranking="expected_revenue")

    replies = [await h.route(lead(i)) for i in range(12)]

    assert all(r.sales[0].buyer_id == "steady" for r in replies)
    flaky_posts = len(buyers.got("flaky", "post"))
    assert 1 <= flaky_posts < 12  # offered first while trusted, then no longer
    assert by_buyer(replies[-1])["flaky"].status == S.OUTBID


async def test_stale_leads_fail_a_lead_age_filter(buyers: BuyerServer, start: Start) -> None:
    from tests.configs import LEAD_FIELDS, compile_doc, document

    buyers.on("fresh_only", ping=bid(60), post=accept())
    buyers.on("any", ping=bid(20), post=accept())
    doc = document(
        [buyer(buyers.url, "fresh_only", filter={"max_lead_age_minutes": 5}), buyer(buyers.url, "any")]
    )
    doc["lead"] = {
        "fields": LEAD_FIELDS | {"submitted_at": {"type": "datetime"}},
        "created_at_field": "submitted_at",
    }
    h = await start(config=compile_doc(doc))
    old = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()

    stale, fresh = await asyncio.gather(
        h.route(lead(1) | {"submitted_at": old}),
        h.route(lead(2) | {"submitted_at": datetime.now(UTC).isoformat()}),
    )

    assert by_buyer(stale)["fresh_only"].reason == "filter: lead older than 5 minutes"
    assert stale.sales[0].buyer_id == "any"
    assert fresh.sales[0].buyer_id == "fresh_only"


async def test_an_answer_without_bid_still_is_parsed_as_no_bid(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=respond({"bid": "no", "reason": "budget"}))
    h = await start([buyer(buyers.url, "a")])

    reply = await h.route()

    assert reply.outcome == pb.UNSOLD and by_buyer(reply)["a"].reason == "budget"
