"""What happened to a lead: attempt statuses, attempts, sales and the routing result."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal

# Prefixes the lead_id of a test call's answer slot; a lead_id never holds "~".
TEST_KEY_PREFIX = "~"


def answer_key(lead_id: str, test: bool) -> str:
    """Where a lead's answer is kept (idempotency stores, the books): a test call's under a key of
    its own, so `test: true` with lead_id L never takes the answer slot of the real L."""
    return TEST_KEY_PREFIX + lead_id if test else lead_id


class Outcome(enum.Enum):
    SOLD = "SOLD"
    UNSOLD = "UNSOLD"
    DUPLICATE = "DUPLICATE"
    # No sale, but a post's outcome is unknown: the buyer may hold the lead (an attempt is marked
    # unsettled). Not to be sold elsewhere until `routelead settle` says which.
    UNSETTLED = "UNSETTLED"
    # A compliance check refused the lead before any buyer was asked (`RoutingResult.reason` says which).
    REJECTED = "REJECTED"


class Status(enum.Enum):
    """One per attempt; names match the proto's AttemptStatus."""

    SKIPPED_FILTER = "SKIPPED_FILTER"
    SKIPPED_CAP = "SKIPPED_CAP"
    SKIPPED_SCHEDULE = "SKIPPED_SCHEDULE"
    DUPLICATE_FOR_BUYER = "DUPLICATE_FOR_BUYER"
    NO_BID = "NO_BID"
    BID = "BID"
    BELOW_FLOOR = "BELOW_FLOOR"
    OUTBID = "OUTBID"
    TIMED_OUT = "TIMED_OUT"
    ERROR = "ERROR"
    POST_ACCEPTED = "POST_ACCEPTED"
    POST_REJECTED = "POST_REJECTED"
    POST_ERROR = "POST_ERROR"
    NOT_OFFERED = "NOT_OFFERED"
    CONDITION_FAILED = "CONDITION_FAILED"
    SKIPPED_CIRCUIT = "SKIPPED_CIRCUIT"
    PAUSED = "PAUSED"


@dataclass(slots=True)
class Attempt:
    """One buyer considered for one lead; mutated as the lead moves through the auction."""

    buyer_id: str
    tier: str
    status: Status
    price: Decimal | None = None
    ping_ms: float = 0.0
    post_ms: float = 0.0
    reason: str = ""
    http_status: int = 0
    # Carried from the ping answer into the post; never shown to callers.
    ping_id: str = ""
    carried: dict[str, str] = field(default_factory=dict)
    exclusive: bool = False
    # A post whose outcome is unknown: the buyer may have taken the lead (booked as unsettled).
    unsettled: bool = False
    # The buyer's own price (ping bid, or fixed price) before our pricing rules: what replay re-prices.
    offered: Decimal | None = None
    # This post attempt's own id, sent as `from: post_id`: the key to match the buyer's records.
    post_id: str = ""


@dataclass(frozen=True, slots=True)
class Check:
    """One compliance check run on a lead before any ping (a lookup step, a list, a certificate):
    what ran and what came of it, never a value the check looked at."""

    name: str
    kind: str  # "lookup"
    # "passed" | "failed" | "timed_out" | "rejected"
    result: str
    detail: str = ""
    ms: float = 0.0
    # The facts it added (`phone.valid` → "true"); verification answers, not the lead's data.
    facts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sale:
    buyer_id: str
    price: Decimal  # the revenue from this buyer
    buyer_lead_id: str
    exclusive: bool
    tier: str
    # This sale's share of the lead's cost, so each sale carries its own margin.
    cost: Decimal = Decimal("0.00")
    # A price dispute: the post answer stated this price, the sale is booked at `price` (the bid).
    stated_price: Decimal | None = None

    @property
    def margin(self) -> Decimal:
        return self.price - self.cost


@dataclass(slots=True)
class RoutingResult:
    lead_id: str
    flow: str
    source_id: str
    test: bool
    outcome: Outcome
    cost: Decimal
    sales: list[Sale] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    trace_id: str = ""
    elapsed_ms: float = 0.0
    replayed: bool = False
    # Which configuration version decided this lead (the books name it).
    config_version: str = ""
    # Keyed digests of the request's fields (domain/request.py): a repeat of the lead_id with other
    # fields is refused, not answered with this result. Never sent to callers.
    request_digest: str = ""
    # The lead type of the flow that routed it (the books cut stats by it).
    lead_type: str = ""
    # The compliance checks run before any ping, in order; and why a REJECTED lead was refused.
    checks: list[Check] = field(default_factory=list)
    reason: str = ""

    @property
    def key(self) -> str:
        return answer_key(self.lead_id, self.test)

    @property
    def revenue(self) -> Decimal:
        return sum((s.price for s in self.sales), Decimal("0"))

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def negative_margin(self) -> bool:
        return self.margin < 0
