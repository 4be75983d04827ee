"""The auction machine on its own: properties that hold for any tree, any answers, any timing."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from routelead.domain.auction import (
    Auction,
    AuctionSpec,
    Bidder,
    Done,
    Ping,
    PingReply,
    Post,
    PostReply,
    Seat,
    TierSpec,
    contract_price,
)
from routelead.domain.floors import FloorPolicy
from routelead.domain.money import to_cents
from routelead.domain.outcome import Status
from routelead.domain.pricing import SourcePricing
from routelead.domain.rules import Facts

NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
SHARES = [Decimal(0), Decimal(10), Decimal(50)]
prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("200"), places=2)
ping_answers = st.one_of(
    st.builds(
        PingReply,
        kind=st.just("bid"),
        price=prices,
        exclusive=st.booleans(),
        conditions=st.sampled_from([{}, {"exclusive": True}, {"states": ["TX"]}, {"states": ["CA"]}]),
    ),
    st.builds(PingReply, kind=st.sampled_from(["no_bid", "timed_out", "error"]), reason=st.just("x")),
)
post_answers = st.one_of(
    st.builds(PostReply, kind=st.just("accepted"), stated_price=st.none() | prices),
    st.builds(
        PostReply,
        kind=st.sampled_from(["rejected", "unknown", "failed", "capped", "late"]),
        reason=st.just("y"),
    ),
)
bidders = st.builds(
    Bidder,
    id=st.just(""),
    priority=st.integers(0, 3),
    fixed_price=st.none() | prices,
    payment_days=st.integers(0, 60),
    price_on_post=st.booleans(),
)
tiers = st.builds(
    TierSpec,
    name=st.just(""),
    seats=st.lists(
        st.builds(Seat, bidder=bidders, skip=st.none() | st.just((Status.SKIPPED_CAP, "cap reached"))),
        min_size=0,
        max_size=4,
    ).map(tuple),
    mode=st.sampled_from(["auction", "waterfall"]),
    order=st.sampled_from(["bid", "priority", "round_robin"]),
    floor=st.none() | prices,
)


@st.composite
def specs(draw: st.DrawFn) -> AuctionSpec:
    drawn = draw(st.lists(tiers, min_size=1, max_size=3))
    n = 0
    named = []
    for t, tier in enumerate(drawn):
        seats = []
        for seat in tier.seats:
            n += 1
            seats.append(Seat(dataclasses.replace(seat.bidder, id=f"b{n}"), seat.skip))
        named.append(TierSpec(f"t{t}", tuple(seats), tier.mode, tier.order, tier.floor))
    return AuctionSpec(
        tiers=tuple(named),
        facts=Facts({"state": "CA"}, 0.0, NOW),
        now=NOW,
        ping_end=0.6,
        deadline=0.75,
        max_buyers=draw(st.integers(1, 3)),
        ping_all_at_once=draw(st.booleans()),
        ranking=draw(st.sampled_from(["price", "expected_revenue", "score"])),
        floors=FloorPolicy(draw(prices), draw(st.none() | prices)),
        source_pricing=SourcePricing(
            Decimal("5.00"), revenue_share=Decimal(draw(st.sampled_from([0, 10, 50])))
        ),
        fixed_cost=Decimal("5.00"),
        pay_on=draw(st.sampled_from(["sold", "accepted"])),
        test=draw(st.booleans()),
    )


@settings(max_examples=400, deadline=None)
@given(spec=specs(), data=st.data())
def test_any_tree_any_answers(spec: AuctionSpec, data: st.DataObject) -> None:
    clock = 0.0
    machine = Auction(spec, clock)
    posted: dict[str, int] = {}
    exclusive_posts: list[str] = []
    held_exclusively = False
    action = machine.action
    steps = 0
    while not isinstance(action, Done):
        steps += 1
        assert steps < 100
        clock += data.draw(st.sampled_from([0.0, 0.01, 0.2]))
        if isinstance(action, Ping):
            assert len(set(action.seats)) == len(action.seats)
            action = machine.send(clock, {s: data.draw(ping_answers) for s in action.seats})
        else:
            assert isinstance(action, Post)
            assert clock < spec.deadline, "no post starts after the deadline"
            assert not held_exclusively, "nobody is offered a lead a buyer may hold exclusively"
            for o in action.orders:
                buyer = machine.attempts[o.seat].buyer_id
                posted[buyer] = posted.get(buyer, 0) + 1
                if o.exclusive:
                    exclusive_posts.append(buyer)
                assert o.price > 0
            answers = {o.seat: data.draw(post_answers) for o in action.orders}
            for o in action.orders:
                if answers[o.seat].kind == "unknown" and (o.exclusive or spec.max_buyers == 1):
                    held_exclusively = True
            action = machine.send(clock, answers)
    sales = action.sales

    assert not spec.test or not posted, "a test lead is never posted"
    assert all(n == 1 for n in posted.values()), "a buyer is posted at most once per lead"
    assert len(sales) <= spec.max_buyers, "never more sales than slots"
    if any(s.exclusive for s in sales):
        assert len(sales) == 1, "an exclusive lead goes to one buyer"
    assert len({s.buyer_id for s in sales}) == len(sales)
    for s in sales:
        attempt = next(a for a in machine.attempts if a.buyer_id == s.buyer_id)
        assert attempt.status is Status.POST_ACCEPTED or spec.test
        assert s.price > 0
        tier = next(t for t in spec.tiers if t.name == s.tier)
        shared_floor = tier.floor if tier.floor is not None else spec.floors.base
        assert s.price >= shared_floor, "never below the floor"
        if (
            tier.floor is None
            and spec.floors.exclusive is not None
            and (attempt.exclusive or spec.max_buyers == 1)
        ):
            assert s.price >= spec.floors.exclusive, "never below the exclusive floor"
    winners = {s.buyer_id for s in sales}
    for a in machine.attempts:
        # A test lead's would-be winner keeps its BID, explained as selected and not posted.
        assert a.status is not Status.BID or (spec.test and a.buyer_id in winners), a.buyer_id
        assert a.reason, f"{a.buyer_id} has no reason"
    revenue = sum((s.price for s in sales), Decimal(0))
    assert sum((s.cost for s in sales), Decimal(0)) == (action.cost if sales else Decimal(0))
    owed = bool(sales) or spec.pay_on == "accepted"
    expected_cost = spec.source_pricing.cost(spec.fixed_cost, revenue) if owed else Decimal(0)
    assert action.cost == to_cents(expected_cost), "cost booked once"


def test_an_unknown_exclusive_post_stops_the_auction() -> None:
    seats = tuple(Seat(Bidder(f"b{i}")) for i in range(3))
    spec = AuctionSpec((TierSpec("t", seats),), Facts({}), NOW, 0.6, 0.75)
    m = Auction(spec, 0.0)
    assert isinstance(m.action, Ping)
    bids = {s: PingReply("bid", price=Decimal(50 - s)) for s in m.action.seats}
    post = m.send(0.1, bids)
    assert isinstance(post, Post) and [o.seat for o in post.orders] == [0]
    done = m.send(0.2, {0: PostReply("unknown", "post timed out after sending")})
    assert isinstance(done, Done) and done.sales == ()
    assert [a.status for a in m.attempts] == [Status.POST_ERROR, Status.NOT_OFFERED, Status.NOT_OFFERED]
    assert m.attempts[0].unsettled


def test_the_bid_is_the_contract() -> None:
    assert contract_price(Decimal("99"), Decimal("0.001"), Decimal("10"), False).price == Decimal("99.00")
    assert contract_price(Decimal("99"), Decimal("0.001"), Decimal("10"), False).dispute
    assert contract_price(Decimal("40"), Decimal("45"), Decimal("10"), True).price == Decimal("45.00")
    low = contract_price(Decimal("40"), Decimal("5"), Decimal("10"), True)
    assert low.price == Decimal("40.00") and "below the floor" in low.dispute
    assert contract_price(Decimal("40"), None, Decimal("10"), False).dispute == ""
