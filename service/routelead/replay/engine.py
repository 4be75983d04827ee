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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from routelead.config.runtime import Buyer, RuntimeConfig
from routelead.domain.auction import (
    DEFAULT_ACCEPT_RATE,
    Auction,
    Bidder,
    Done,
    Ping,
    PingReply,
    PostReply,
    Seat,
    TierSpec,
)
from routelead.domain.outcome import Status
from routelead.domain.rules import Facts

ZERO = Decimal("0.00")
_BID_STATUSES = frozenset(
    {"BID", "BELOW_FLOOR", "OUTBID", "POST_ACCEPTED", "POST_REJECTED", "POST_ERROR", "NOT_OFFERED"}
)
_PINGED = _BID_STATUSES | {"NO_BID", "TIMED_OUT", "ERROR", "CONDITION_FAILED"}


@dataclass(frozen=True, slots=True)
class RecordedAttempt:
    buyer_id: str
    status: str
    bid: Decimal | None
    # Before the recording configuration's buyer pricing rules; None in records older than it.
    offered: Decimal | None = None
    # The bid asked for an exclusive sale.
    exclusive: bool = False


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


def replay_lead(
    config: RuntimeConfig, lead: RecordedLead, accept_rates: Mapping[str, Decimal] | None = None
) -> ReplayedLead:
    """Drive the live auction machine with the recorded answers (see the module's notes)."""
    unknowns = Unknowns()
    flow = config.flows.get(lead.flow)
    source = config.sources.get(lead.source_id)
    if (
        flow is None
        or source is None
        or (flow.sources is not None and source.id not in flow.sources)
        or not source.sells(flow.lead_type)
    ):
        unknowns.not_configured += 1
        return ReplayedLead(lead.lead_id, (), ZERO, unknowns)
    source = source.selling(flow.lead_type)  # its cost for this flow's lead type
    facts = Facts(lead.ping_fields, 0.0, lead.received_at)
    fixed_cost = source.pricing.fixed_cost(facts) + flow.fee
    recorded = {a.buyer_id: a for a in lead.attempts}
    rates = accept_rates or {}
    # Rotation turns are as of replay, not as of the lead: tiers replay in configured order.
    tiers = [
        TierSpec(
            t.name,
            tuple(_seat(b, facts, recorded, unknowns, rates) for b in t.buyers),
            t.mode,
            t.order,
            t.floor,
        )
        for t in flow.tiers
    ]
    spec = flow.auction(
        tiers,
        facts,
        lead.received_at,
        ping_end=math.inf,
        deadline=math.inf,
        pricing=source.pricing,
        fixed_cost=fixed_cost,
        pay_on=source.pay_on,
        margin_floor=flow.margin_floor(source, fixed_cost),
    )
    machine = Auction(spec, 0.0)
    action = machine.action
    while not isinstance(action, Done):
        who = machine.attempts
        if isinstance(action, Ping):
            action = machine.send(0.0, {i: _pinged(recorded[who[i].buyer_id]) for i in action.seats})
        else:
            posts = {o.seat: _posted(recorded.get(who[o.seat].buyer_id), unknowns) for o in action.orders}
            action = machine.send(0.0, posts)
    sales = tuple(RecordedSale(s.buyer_id, s.price, s.cost) for s in action.sales)
    return ReplayedLead(lead.lead_id, sales, action.cost, unknowns)


def _seat(
    buyer: Buyer,
    facts: Facts,
    recorded: Mapping[str, RecordedAttempt],
    unknowns: Unknowns,
    accept_rates: Mapping[str, Decimal],
) -> Seat:
    rate = accept_rates.get(buyer.id, DEFAULT_ACCEPT_RATE)
    bidder = Bidder(buyer.id, buyer.priority, buyer.fixed_price, buyer.payment_days, buyer.pricing, rate)
    if (why := buyer.filter.failure(facts)) is not None:
        return Seat(bidder, (Status.SKIPPED_FILTER, why))
    a = recorded.get(buyer.id)
    if buyer.fixed_price is None and (a is None or a.status not in _PINGED):
        unknowns.unpinged += 1
        return Seat(bidder, (Status.NOT_OFFERED, "not pinged when the lead was routed"))
    return Seat(bidder)


def _pinged(a: RecordedAttempt) -> PingReply:
    if a.status not in _BID_STATUSES or a.bid is None:
        return PingReply("no_bid", a.status)
    # The candidate's pricing rules apply to what the buyer offered; an older record has only
    # the price after the recording rules.
    return PingReply("bid", price=a.offered if a.offered is not None else a.bid, exclusive=a.exclusive)


def _posted(a: RecordedAttempt | None, unknowns: Unknowns) -> PostReply:
    if a is None or not a.status.startswith("POST_"):
        unknowns.assumed_accepts += 1
        return PostReply("accepted")
    return PostReply("accepted" if a.status == "POST_ACCEPTED" else "rejected", "as recorded")


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
