"""Typed, immutable results: money as Decimal, statuses as names, straight from the protobuf reply."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from routelead.v1 import routelead_pb2 as pb


class Outcome(enum.Enum):
    SOLD = "SOLD"
    UNSOLD = "UNSOLD"
    DUPLICATE = "DUPLICATE"
    # No sale, but a buyer may hold the lead (a post with an unknown outcome): do not resell it.
    UNSETTLED = "UNSETTLED"
    # A compliance check refused the lead before any buyer was asked.
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class SaleInfo:
    buyer_id: str
    price: Decimal
    buyer_lead_id: str
    exclusive: bool
    tier: str
    # A price dispute: what the buyer's post answer stated; the sale is booked at `price` (its bid).
    stated_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    buyer_id: str
    tier: str
    # The proto's AttemptStatus name, e.g. "POST_ACCEPTED", "TIMED_OUT".
    status: str
    price: Decimal | None
    ping_ms: float
    post_ms: float
    reason: str
    http_status: int
    # A post whose outcome is unknown: the buyer may have the lead.
    unsettled: bool = False


@dataclass(frozen=True, slots=True)
class RouteResult:
    lead_id: str
    outcome: Outcome
    sales: tuple[SaleInfo, ...]
    cost: Decimal
    revenue: Decimal
    margin: Decimal
    attempts: tuple[AttemptInfo, ...]
    trace_id: str
    test: bool
    replayed: bool
    flow: str
    source_id: str
    # Time the service spent on this lead, as it measured it.
    elapsed_ms: float
    # How many RPCs this call took (1 unless it was retried after UNAVAILABLE).
    rpc_attempts: int = 1

    @property
    def sold(self) -> bool:
        return self.outcome is Outcome.SOLD


def _money(text: str) -> Decimal:
    return Decimal(text) if text else Decimal("0")


def from_proto(reply: pb.RouteLeadResponse, rpc_attempts: int = 1) -> RouteResult:
    return RouteResult(
        lead_id=reply.lead_id,
        outcome=Outcome(pb.Outcome.Name(reply.outcome)),
        sales=tuple(
            SaleInfo(
                s.buyer_id,
                Decimal(s.price),
                s.buyer_lead_id,
                s.exclusive,
                s.tier,
                Decimal(s.stated_price) if s.stated_price else None,
            )
            for s in reply.sales
        ),
        cost=_money(reply.cost),
        revenue=_money(reply.revenue),
        margin=_money(reply.margin),
        attempts=tuple(
            AttemptInfo(
                buyer_id=a.buyer_id,
                tier=a.tier,
                status=pb.AttemptStatus.Name(a.status),
                price=Decimal(a.price) if a.price else None,
                ping_ms=a.ping_ms,
                post_ms=a.post_ms,
                reason=a.reason,
                http_status=a.http_status,
                unsettled=a.unsettled,
            )
            for a in reply.attempts
        ),
        trace_id=reply.trace_id,
        test=reply.test,
        replayed=reply.replayed,
        flow=reply.flow,
        source_id=reply.source_id,
        elapsed_ms=reply.elapsed_ms,
        rpc_attempts=rpc_attempts,
    )


@dataclass(frozen=True, slots=True)
class QuoteResult:
    """An inbound quote: commit `quote_id` before `expires_at` to sell at `price`."""

    quote_id: str
    offered: bool
    # What the source is paid if the committed lead sells; None without an offer.
    price: Decimal | None
    expires_at: datetime | None
    expires_in_ms: int
    # Why there is no offer.
    reason: str
    flow: str
    source_id: str
    config_version: str
    elapsed_ms: float


def quote_from_proto(reply: pb.QuoteResponse) -> QuoteResult:
    return QuoteResult(
        quote_id=reply.quote_id,
        offered=reply.offered,
        price=_money(reply.price) if reply.price else None,
        expires_at=datetime.fromisoformat(reply.expires_at) if reply.expires_at else None,
        expires_in_ms=reply.expires_in_ms,
        reason=reply.reason,
        flow=reply.flow,
        source_id=reply.source_id,
        config_version=reply.config_version,
        elapsed_ms=reply.elapsed_ms,
    )
