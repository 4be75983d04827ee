"""The auction as one sans-I/O state machine: ping tree, floors, conditions, allocation, booking.

The machine never waits and never sends: it says what to do next (`Ping` these buyers until an
instant, `Post` to these buyers at these prices, `Done`) and takes the results back with the time
they arrived. The router drives it over the network; replay drives it with recorded answers; a
quote drives it up to its first post. One copy of the decisions, so all three agree.

Every attempt it creates ends explained: a skip decided by the driver (filter, cap, schedule…),
the buyer's own answer, a floor or condition it failed, or why it lost to the sale that was made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from routelead.domain.conditions import check_conditions
from routelead.domain.explain import Standing, TierRule, why_lost
from routelead.domain.floors import FloorPolicy, Floors
from routelead.domain.money import ZERO, fmt, to_cents
from routelead.domain.outcome import Attempt, Sale, Status
from routelead.domain.pricing import PriceBook, SourcePricing, book
from routelead.domain.rules import Facts
from routelead.domain.tree import Offer, Ranking, ScoreWeights, TierMode, TierOrder, allocate, value

# Below this much time left, a post cannot usefully start.
MIN_POST_S = 0.005
# The accept rate assumed for a buyer with no post history (MemoryBuyerStats' prior).
DEFAULT_ACCEPT_RATE = Decimal("0.9")


@dataclass(frozen=True, slots=True)
class Bidder:
    """One buyer as the auction sees it: what ranking, floors and pricing need; no endpoints."""

    id: str
    priority: int = 0
    fixed_price: Decimal | None = None
    payment_days: int = 30
    pricing: PriceBook = field(default_factory=PriceBook)
    accept_rate: Decimal = DEFAULT_ACCEPT_RATE
    # Volume counts for this buyer's pricing rules ("buyer:day" → n), when they use any.
    counts: Mapping[str, int] = field(default_factory=dict)
    # The buyer's contract lets the post answer set the price (never below the floor).
    price_on_post: bool = False


@dataclass(frozen=True, slots=True)
class Seat:
    """A buyer's place in one tier for this lead, in this lead's order (rotation applied).
    `skip`: the driver found it ineligible (status, reason) before any ping."""

    bidder: Bidder
    skip: tuple[Status, str] | None = None


@dataclass(frozen=True, slots=True)
class TierSpec:
    name: str
    seats: tuple[Seat, ...]
    mode: TierMode = "auction"
    order: TierOrder = "bid"
    floor: Decimal | None = None


@dataclass(frozen=True, slots=True)
class AuctionSpec:
    """Everything one lead's auction decides from, fixed before the first ping."""

    tiers: tuple[TierSpec, ...]
    facts: Facts
    now: datetime
    # Monotonic instants: pings end at `ping_end`; no post starts after `deadline - MIN_POST_S`.
    ping_end: float
    deadline: float
    max_buyers: int = 1
    ping_all_at_once: bool = True
    ranking: Ranking = "price"
    score_weights: ScoreWeights = field(default_factory=ScoreWeights)
    consent_field: str | None = None
    floors: FloorPolicy = field(default_factory=lambda: FloorPolicy(Decimal(0)))
    # Margin protection turned into a floor for a single buyer (None: no minimum margin).
    margin_floor: Decimal | None = None
    test: bool = False
    # Booking: what the source is owed.
    source_pricing: SourcePricing = field(default_factory=lambda: SourcePricing(Decimal(0)))
    fixed_cost: Decimal = Decimal(0)
    pay_on: Literal["sold", "accepted"] = "sold"


# --- what the machine asks for -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Ping these attempts (indexes into `Auction.attempts`) and report each by `until`."""

    seats: tuple[int, ...]
    until: float


@dataclass(frozen=True, slots=True)
class PostOrder:
    seat: int
    price: Decimal
    exclusive: bool
    # The floor the bid cleared: a price-on-post buyer's stated price may not go below it.
    floor: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class Post:
    """Post the full lead to each order (concurrently) and report each outcome."""

    orders: tuple[PostOrder, ...]


@dataclass(frozen=True, slots=True)
class Done:
    sales: tuple[Sale, ...]
    cost: Decimal


Action = Ping | Post | Done

# --- what the driver reports ---------------------------------------------------------------

PingKind = Literal["bid", "no_bid", "timed_out", "error"]
PostKind = Literal["accepted", "rejected", "unknown", "failed", "capped", "late", "withheld"]


@dataclass(frozen=True, slots=True)
class PingReply:
    kind: PingKind
    reason: str = ""
    price: Decimal | None = None
    exclusive: bool = False
    conditions: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PostReply:
    """accepted / rejected: the buyer answered; unknown: it may have taken the lead (timed out
    after sending, unreadable answer); failed: it provably did not; capped: no reservation;
    late: never sent, no time was left; withheld: never sent, the books did not take its intent."""

    kind: PostKind
    reason: str = ""
    stated_price: Decimal | None = None
    buyer_lead_id: str = ""


@dataclass(frozen=True, slots=True)
class Contract:
    """The price a sale is booked at; `stated`: a different price the post answer disputed it with."""

    price: Decimal
    stated: Decimal | None
    dispute: str = ""


def contract_price(
    bid: Decimal, stated: Decimal | None, floor: Decimal, price_on_post: bool, direct: bool = False
) -> Contract:
    """The bid is the contract: a different price in the post answer is kept beside the sale and
    flagged, never silently booked. A price-on-post buyer's stated price is the revenue, and so is a
    direct-post (fixed-price) buyer's (seed 003's dynamic buyer pricing), unless it is below the
    floor: then the bid stands and the sale is disputed."""
    bid = to_cents(bid)
    if stated is None:
        return Contract(bid, None)
    said = to_cents(stated)
    if said == bid:
        return Contract(bid, None)
    if (direct or price_on_post) and said > 0 and said >= floor:
        return Contract(said, None)
    below = ", below the floor" if direct or price_on_post else ""
    return Contract(bid, said, f"the post answer stated {fmt(said)}{below}")


def contract(order: PostOrder, stated: Decimal | None, price_on_post: bool, direct: bool) -> Contract:
    return contract_price(order.price, stated, order.floor, price_on_post, direct)


@dataclass(slots=True)
class _Live:
    seat: int
    bidder: Bidder
    tier: int
    order: int
    pinged: bool
    conditions: Mapping[str, object] = field(default_factory=dict)
    value: Decimal = ZERO
    floor: Decimal = ZERO


class Auction:
    """One lead's auction. `action` is what to do now; `send` reports it and returns the next."""

    def __init__(self, spec: AuctionSpec, now: float) -> None:
        self.spec = spec
        self.attempts: list[Attempt] = []
        self.sales: list[Sale] = []
        # Attempts whose post outcome is unknown: each buyer may hold the lead.
        self.unsettled: list[int] = []
        self._held = False
        self.cost = ZERO
        self._now = now
        self._replies: Mapping[int, PingReply] | Mapping[int, PostReply] = {}
        self._live: list[list[_Live]] = []
        self._run = self._auction()
        self.action: Action = next(self._run)

    def send(self, now: float, replies: Mapping[int, PingReply] | Mapping[int, PostReply]) -> Action:
        """Report the answers to the current action (one per seat it named)."""
        if isinstance(self.action, Done):
            raise RuntimeError("the auction is over")
        self._now = now
        self._replies = replies
        self.action = self._run.send(None)
        return self.action

    # --- the walk ---------------------------------------------------------------------------

    def _auction(self) -> Generator[Action, None, None]:
        spec = self.spec
        for t, tier in enumerate(spec.tiers):
            self._live.append(self._seat_tier(t, tier))
        if spec.ping_all_at_once:
            yield from self._ping([x for live in self._live for x in live])
        for t, tier in enumerate(spec.tiers):
            if self._sold_out:
                break
            floors = spec.floors.for_tier(tier.floor, spec.facts, spec.now)
            if spec.margin_floor is not None:
                floors = Floors(max(floors.shared, spec.margin_floor), floors.exclusive)
            live = self._live[t]
            if tier.mode == "auction":
                yield from self._ping(live)  # nothing left to ask when all were pinged at once
                yield from self._sell_auction(self._acceptable(live, tier, floors))
            else:
                yield from self._sell_waterfall(live, floors)
        self._explain_losers()
        self._book()
        yield Done(tuple(self.sales), self.cost)

    def _seat_tier(self, t: int, tier: TierSpec) -> list[_Live]:
        live: list[_Live] = []
        for order, seat in enumerate(tier.seats):
            b = seat.bidder
            a = Attempt(b.id, tier.name, Status.BID)
            index = len(self.attempts)
            self.attempts.append(a)
            if seat.skip is not None:
                a.status, a.reason = seat.skip
                continue
            if b.fixed_price is not None:
                a.price = a.offered = b.fixed_price
                a.reason = "fixed-price buyer: direct post, no ping"
            live.append(_Live(index, b, t, order, pinged=b.fixed_price is not None))
        if tier.mode == "waterfall":
            # Offered one at a time, before any bid is known: by priority, or by fixed price.
            if tier.order == "priority":
                live.sort(key=lambda x: -x.bidder.priority)
            elif tier.order == "bid":
                live.sort(key=lambda x: -(x.bidder.fixed_price or ZERO))
        return live

    def _ping(self, live: Sequence[_Live]) -> Generator[Action, None, None]:
        todo = [x for x in live if not x.pinged and self.attempts[x.seat].status is Status.BID]
        if not todo:
            return
        for x in todo:
            x.pinged = True
        yield Ping(tuple(x.seat for x in todo), self.spec.ping_end)
        replies = self._replies
        for x in todo:
            answer = replies.get(x.seat)
            a = self.attempts[x.seat]
            if not isinstance(answer, PingReply) or answer.kind == "timed_out":
                a.status = Status.TIMED_OUT
                a.reason = answer.reason if answer is not None else "no answer before the ping window closed"
            elif answer.kind == "error":
                a.status, a.reason = Status.ERROR, answer.reason
            elif answer.kind == "no_bid":
                a.status, a.reason = Status.NO_BID, answer.reason or "no bid"
            else:
                a.price = a.offered = answer.price
                a.exclusive = answer.exclusive
                a.reason = answer.reason or "bid"
                x.conditions = answer.conditions

    def _clears(self, x: _Live, floors: Floors) -> bool:
        """Conditions, buyer pricing rules and floors; marks the attempt when the bid fails one."""
        spec, a = self.spec, self.attempts[x.seat]
        verdict = check_conditions(x.conditions, spec.facts, spec.consent_field)
        if verdict.failure is not None:
            a.status, a.reason = Status.CONDITION_FAILED, verdict.failure
            return False
        a.exclusive = a.exclusive or verdict.exclusive
        exclusive = a.exclusive or spec.max_buyers == 1
        if x.bidder.pricing.rules:
            priced = dataclasses.replace(spec.facts, counts=x.bidder.counts, exclusive=exclusive)
            a.price = x.bidder.pricing.apply(a.price or ZERO, priced)
        floor = floors.for_bid(exclusive)
        x.floor = floor
        price = a.price or ZERO
        if price < floor or price <= 0:
            kind = "exclusive floor" if floor > floors.shared else "floor"
            a.status, a.reason = Status.BELOW_FLOOR, f"bid {fmt(price)} is below the {kind} {fmt(floor)}"
            return False
        return True

    def _acceptable(self, live: list[_Live], tier: TierSpec, floors: Floors) -> list[_Live]:
        """Bids that clear conditions and floors, in this tier's offer order."""
        ok = [x for x in live if self.attempts[x.seat].status is Status.BID and self._clears(x, floors)]
        if not ok:
            return []
        spec = self.spec
        top = max(self.attempts[x.seat].price or ZERO for x in ok)
        for x in ok:
            b = x.bidder
            price = self.attempts[x.seat].price or ZERO
            x.value = value(spec.ranking, price, b.accept_rate, b.payment_days, top, spec.score_weights)
        if tier.order == "bid":
            ok.sort(key=lambda x: (-x.value, -x.bidder.priority, x.order))
        elif tier.order == "priority":
            ok.sort(key=lambda x: (-x.bidder.priority, -x.value, x.order))
        return ok  # round-robin and weighted: already in rotation order

    def _sell_auction(self, offers: list[_Live]) -> Generator[Action, None, None]:
        """Post to the best allocation; a rejection frees its slot for the next bid while time remains."""
        remaining = list(offers)
        while remaining and not self._sold_out and self._time_left:
            pick = allocate(
                [
                    Offer(
                        str(x.seat),
                        self.attempts[x.seat].price or ZERO,
                        x.value,
                        self.attempts[x.seat].exclusive,
                    )
                    for x in remaining
                ],
                self._slots,
                shared_only=self._shared_only,
            )
            if not pick:
                break
            keys = {int(o.key) for o in pick}
            chosen = [x for x in remaining if x.seat in keys]
            exclusive = len(chosen) == 1 and (
                self.attempts[chosen[0].seat].exclusive or self.spec.max_buyers == 1
            )
            remaining = [x for x in remaining if x.seat not in keys]
            yield from self._offer(chosen, exclusive)

    def _sell_waterfall(self, live: list[_Live], floors: Floors) -> Generator[Action, None, None]:
        """Offer one buyer at a time in tier order (pinging it first if not yet asked)."""
        for x in live:
            if self._sold_out or not self._time_left:
                break
            if not x.pinged:
                yield from self._ping([x])
            a = self.attempts[x.seat]
            if a.status is not Status.BID or not self._clears(x, floors):
                continue
            if self._shared_only and a.exclusive:
                continue  # a shared sale exists (or may): an exclusive bid cannot join it
            yield from self._offer([x], a.exclusive or self.spec.max_buyers == 1)

    def _offer(self, chosen: list[_Live], exclusive: bool) -> Generator[Action, None, None]:
        orders = []
        for x in chosen:
            a = self.attempts[x.seat]
            price = to_cents(a.price or ZERO)
            if self.spec.test:
                a.reason = f"selected at {fmt(price)}; test lead, not posted"
                self.sales.append(Sale(a.buyer_id, price, "", exclusive, a.tier))
                continue
            orders.append(PostOrder(x.seat, price, exclusive, x.floor))
        if not orders:
            return
        yield Post(tuple(orders))
        replies = self._replies
        for order in orders:
            answer = replies.get(order.seat)
            bidder = next(x.bidder for x in chosen if x.seat == order.seat)
            self._posted(order, answer if isinstance(answer, PostReply) else PostReply("late"), bidder)

    def _posted(self, order: PostOrder, answer: PostReply, bidder: Bidder) -> None:
        a = self.attempts[order.seat]
        if answer.kind == "late":
            return  # the attempt stays BID and is explained as NOT_OFFERED
        if answer.kind == "withheld":
            a.status, a.reason = Status.NOT_OFFERED, answer.reason
        elif answer.kind == "capped":
            a.status, a.reason = Status.SKIPPED_CAP, answer.reason
        elif answer.kind == "rejected":
            a.status, a.reason = Status.POST_REJECTED, answer.reason
        elif answer.kind == "failed":
            a.status, a.reason = Status.POST_ERROR, answer.reason
        elif answer.kind == "unknown":
            # The buyer may hold the lead: it takes a slot, and held as an exclusive offer, the lead.
            a.status, a.reason = Status.POST_ERROR, answer.reason
            a.unsettled = True
            self.unsettled.append(order.seat)
            self._held = self._held or order.exclusive
        else:
            deal = contract(order, answer.stated_price, bidder.price_on_post, bidder.fixed_price is not None)
            a.price = deal.price
            a.status = Status.POST_ACCEPTED
            dispute = f" (the bid); price dispute: {deal.dispute}" if deal.dispute else ""
            a.reason = f"sold at {fmt(deal.price)}{dispute}" + (f": {answer.reason}" if answer.reason else "")
            self.sales.append(
                Sale(
                    a.buyer_id,
                    deal.price,
                    answer.buyer_lead_id,
                    order.exclusive,
                    a.tier,
                    stated_price=deal.stated,
                )
            )

    # --- state ------------------------------------------------------------------------------

    @property
    def _slots(self) -> int:
        return self.spec.max_buyers - len(self.sales) - len(self.unsettled)

    @property
    def _sold_out(self) -> bool:
        """No slot left, an exclusive sale made, or an exclusive offer whose outcome is unknown:
        a lead a buyer may hold exclusively is offered to nobody else."""
        return self._held or self._slots <= 0 or any(s.exclusive for s in self.sales)

    @property
    def _shared_only(self) -> bool:
        """A buyer already has (or may have) the lead: only shared bids can join."""
        return bool(self.sales or self.unsettled)

    @property
    def _time_left(self) -> bool:
        return self._now < self.spec.deadline - MIN_POST_S

    def _explain_losers(self) -> None:
        """Each acceptable bid that did not sell says why: time ran out, a buyer may hold the lead,
        or what made another buyer win (domain/explain.py)."""
        spec, sales = self.spec, self.sales
        where = {
            (spec.tiers[x.tier].name, x.bidder.id): Standing(
                x.bidder.id,
                x.tier,
                place,
                self.attempts[x.seat].price,
                x.value,
                x.bidder.priority,
                self.attempts[x.seat].exclusive,
            )
            for live in self._live
            for place, x in enumerate(live)
        }
        winners = [
            dataclasses.replace(where[(s.tier, s.buyer_id)], price=s.price, exclusive=s.exclusive)
            for s in sales
        ]
        rules = [TierRule(t.name, t.mode, t.order) for t in spec.tiers]
        sold = {s.buyer_id for s in sales}
        held = ", ".join(self.attempts[i].buyer_id for i in self.unsettled)
        for live in self._live:
            for x in live:
                a = self.attempts[x.seat]
                if a.status is not Status.BID or a.buyer_id in sold:
                    continue
                a.status = Status.NOT_OFFERED if not sales else Status.OUTBID
                if sales:
                    a.reason = why_lost(
                        where[(a.tier, a.buyer_id)], winners, rules, spec.ranking, spec.max_buyers
                    )
                elif held:
                    a.reason = (
                        f"not offered: the post to {held} has an unknown outcome; "
                        "the lead is offered to nobody else until it is settled"
                    )
                else:
                    a.reason = "acceptable, but the deadline ran out before it could be offered"

    def _book(self) -> None:
        """Cost (fixed part plus any revenue share), rounded once; each sale gets its cost share."""
        spec = self.spec
        prices = [s.price for s in self.sales]
        owed = bool(self.sales) or spec.pay_on == "accepted"
        cost = spec.source_pricing.cost(spec.fixed_cost, sum(prices, ZERO)) if owed else ZERO
        booked = book(cost, prices)
        self.cost = booked.cost
        self.sales = [
            dataclasses.replace(s, cost=c) for s, c in zip(self.sales, booked.sale_costs, strict=True)
        ]


__all__ = [
    "MIN_POST_S",
    "Action",
    "Auction",
    "AuctionSpec",
    "Bidder",
    "Contract",
    "Done",
    "Ping",
    "PingReply",
    "Post",
    "PostOrder",
    "PostReply",
    "Seat",
    "TierSpec",
    "contract_price",
]
