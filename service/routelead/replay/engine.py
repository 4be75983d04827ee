"""Re-run one recorded lead through a candidate configuration: pure, no I/O, no buyer contacted.

What the books hold is enough to re-decide most leads: the non-PII ping fields, every buyer's
recorded bid, and every recorded post outcome. What they cannot tell is counted, never guessed
silently (see `Unknowns`):
- a buyer the candidate would ask that was not pinged when the lead was routed has no bid: it is
  left out (`unpinged`);
- a buyer the candidate would post to that never got a post is assumed to accept again at its
  bid (`assumed_accepts`);
- filters see the ping fields only (PII is never stored), so a filter on a PII field fails;
- caps, schedules, dedupe, circuit breakers, rotation turns and volume counts are as of replay,
  not as of the original moment: none of them applies (tier order "round_robin"/"weighted"
  replays in configured order);
- buyer pricing rules: the candidate's apply to the price each buyer offered (kept before the
  recording configuration's rules); attempts recorded before that was kept have only the price
  after those rules, and the candidate's apply on top of it. A price a buyer stated in its post
  answer is not replayed: the candidate's price is its bid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from routelead.config.runtime import Buyer, Flow, RuntimeConfig, Tier
from routelead.domain.floors import Floors
from routelead.domain.pricing import book
from routelead.domain.rules import Facts
from routelead.domain.tree import Offer, allocate, value

ZERO = Decimal("0.00")
_BID_STATUSES = frozenset(
    {"BID", "BELOW_FLOOR", "OUTBID", "POST_ACCEPTED", "POST_REJECTED", "POST_ERROR", "NOT_OFFERED"}
)
_PINGED = _BID_STATUSES | {"NO_BID", "TIMED_OUT", "ERROR", "CONDITION_FAILED"}
# The prior the live ranking uses for a buyer without history (state.memory.MemoryBuyerStats).
DEFAULT_ACCEPT_RATE = Decimal("0.9")


@dataclass(frozen=True, slots=True)
class RecordedAttempt:
    buyer_id: str
    status: str
    bid: Decimal | None
    # Before the recording configuration's buyer pricing rules; None in records older than it.
    offered: Decimal | None = None


@dataclass(frozen=True, slots=True)
class RecordedSale:
    buyer_id: str
    price: Decimal
    cost: Decimal


@dataclass(frozen=True, slots=True)
class RecordedLead:
    lead_id: str
    flow: str
    source_id: str
    received_at: datetime
    ping_fields: Mapping[str, str]
    cost: Decimal
    attempts: tuple[RecordedAttempt, ...]
    sales: tuple[RecordedSale, ...]  # settled as sold


@dataclass(slots=True)
class Unknowns:
    unpinged: int = 0
    assumed_accepts: int = 0
    not_configured: int = 0


@dataclass(frozen=True, slots=True)
class ReplayedLead:
    lead_id: str
    sales: tuple[RecordedSale, ...]
    cost: Decimal
    unknowns: Unknowns = field(default_factory=Unknowns)

    @property
    def revenue(self) -> Decimal:
        return sum((s.price for s in self.sales), ZERO)


@dataclass(slots=True)
class _Bid:
    buyer: Buyer
    price: Decimal
    post: str | None  # the recorded post status, None: never posted
    order: int
    value: Decimal = ZERO


def replay_lead(
    config: RuntimeConfig, lead: RecordedLead, accept_rates: Mapping[str, Decimal] | None = None
) -> ReplayedLead:
    unknowns = Unknowns()
    flow = config.flows.get(lead.flow)
    source = config.sources.get(lead.source_id)
    if flow is None or source is None or (flow.sources is not None and source.id not in flow.sources):
        unknowns.not_configured += 1
        return ReplayedLead(lead.lead_id, (), ZERO, unknowns)
    facts = Facts(lead.ping_fields, 0.0, lead.received_at)
    fixed_cost = source.pricing.fixed_cost(facts) + flow.fee
    margin_floor = (
        source.pricing.margin_floor(fixed_cost - flow.fee, flow.fee, flow.min_margin)
        if flow.min_margin is not None
        else None
    )
    recorded = {a.buyer_id: a for a in lead.attempts}
    sales: list[RecordedSale] = []
    for tier in flow.tiers:
        if len(sales) >= flow.max_buyers:
            break
        floors = flow.floors.for_tier(tier.floor, facts, lead.received_at)
        if margin_floor is not None:
            floors = Floors(max(floors.shared, margin_floor), floors.exclusive)
        bids = _bids(tier, flow, facts, floors, recorded, unknowns, accept_rates or {})
        sales.extend(_sell(bids, flow, flow.max_buyers - len(sales), bool(sales), unknowns))
    prices = [s.price for s in sales]
    owed = sales or source.pay_on == "accepted"
    cost = source.pricing.cost(fixed_cost, sum(prices, ZERO)) if owed else ZERO
    booked = book(cost, prices)
    shared = tuple(
        RecordedSale(s.buyer_id, s.price, c) for s, c in zip(sales, booked.sale_costs, strict=True)
    )
    return ReplayedLead(lead.lead_id, shared, booked.cost, unknowns)


def _bids(
    tier: Tier,
    flow: Flow,
    facts: Facts,
    floors: Floors,
    recorded: Mapping[str, RecordedAttempt],
    unknowns: Unknowns,
    accept_rates: Mapping[str, Decimal],
) -> list[_Bid]:
    exclusive = flow.max_buyers == 1
    out: list[_Bid] = []
    for order, buyer in enumerate(tier.buyers):
        if buyer.filter.failure(facts) is not None:
            continue
        a = recorded.get(buyer.id)
        post = a.status if a is not None and a.status.startswith("POST_") else None
        if buyer.fixed_price is not None:
            price = buyer.fixed_price  # no ping needed: the price is known
        elif a is None or a.status not in _PINGED:
            unknowns.unpinged += 1
            continue
        elif a.status not in _BID_STATUSES or a.bid is None:
            continue
        elif a.offered is not None:
            price = a.offered  # the candidate's pricing rules apply to what the buyer offered
        else:
            price = a.bid  # an older record: the recording rules are already in it
        if buyer.pricing.rules:
            price = buyer.pricing.apply(price, dataclasses.replace(facts, exclusive=exclusive))
        if price < floors.for_bid(exclusive) or price <= 0:
            continue
        out.append(_Bid(buyer, price, post, order))
    top = max((b.price for b in out), default=ZERO)
    for b in out:
        rate = accept_rates.get(b.buyer.id, DEFAULT_ACCEPT_RATE)
        b.value = value(flow.ranking, b.price, rate, b.buyer.payment_days, top, flow.score_weights)
    if tier.mode == "waterfall":
        if tier.order == "priority":
            out.sort(key=lambda b: (-b.buyer.priority, b.order))
        elif tier.order == "bid":
            out.sort(key=lambda b: (-(b.buyer.fixed_price or ZERO), b.order))
    elif tier.order == "bid":
        out.sort(key=lambda b: (-b.value, -b.buyer.priority, b.order))
    elif tier.order == "priority":
        out.sort(key=lambda b: (-b.buyer.priority, -b.value, b.order))
    return out


def _accepts(b: _Bid, unknowns: Unknowns) -> bool:
    if b.post is None:
        unknowns.assumed_accepts += 1
        return True
    return b.post == "POST_ACCEPTED"


def _sell(
    bids: Sequence[_Bid], flow: Flow, slots: int, shared_only: bool, unknowns: Unknowns
) -> list[RecordedSale]:
    """Like the live auction: post to the best allocation, a rejection frees its slot."""
    sold: list[RecordedSale] = []
    remaining = list(bids)
    exclusive = flow.max_buyers == 1
    while remaining and slots - len(sold) > 0:
        if sold and exclusive:
            break
        pick = allocate(
            [Offer(b.buyer.id, b.price, b.value, exclusive) for b in remaining],
            slots - len(sold),
            shared_only=shared_only or bool(sold),
        )
        if not pick:
            break
        keys = {o.key for o in pick}
        chosen = [b for b in remaining if b.buyer.id in keys]
        remaining = [b for b in remaining if b.buyer.id not in keys]
        sold.extend(RecordedSale(b.buyer.id, b.price, ZERO) for b in chosen if _accepts(b, unknowns))
    return sold


@dataclass(slots=True)
class Side:
    """Sold count, revenue and margin of one side of the comparison, per buyer and in total."""

    leads: int = 0
    sold: int = 0
    revenue: Decimal = ZERO
    cost: Decimal = ZERO
    by_buyer: dict[str, tuple[int, Decimal, Decimal]] = field(default_factory=dict)

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    def add(self, cost: Decimal, sales: Sequence[RecordedSale]) -> None:
        self.leads += 1
        self.sold += bool(sales)
        self.cost += cost
        for s in sales:
            self.revenue += s.price
            n, rev, margin = self.by_buyer.get(s.buyer_id, (0, ZERO, ZERO))
            self.by_buyer[s.buyer_id] = (n + 1, rev + s.price, margin + s.price - s.cost)


@dataclass(slots=True)
class Comparison:
    actual: Side = field(default_factory=Side)
    candidate: Side = field(default_factory=Side)
    unknowns: Unknowns = field(default_factory=Unknowns)

    def add(self, lead: RecordedLead, replayed: ReplayedLead) -> None:
        self.actual.add(lead.cost, lead.sales)
        self.candidate.add(replayed.cost, replayed.sales)
        self.unknowns.unpinged += replayed.unknowns.unpinged
        self.unknowns.assumed_accepts += replayed.unknowns.assumed_accepts
        self.unknowns.not_configured += replayed.unknowns.not_configured


def compare_into(
    out: Comparison,
    config: RuntimeConfig,
    lead: RecordedLead,
    accept_rates: Mapping[str, Decimal] | None = None,
) -> ReplayedLead:
    replayed = replay_lead(config, lead, accept_rates)
    out.add(lead, replayed)
    return replayed
