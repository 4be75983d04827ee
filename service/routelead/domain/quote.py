"""Inbound ping-post: what a source is offered for a lead it has only pinged us with.

A quote is the auction paused before its first post (domain/auction.py): the bids in that post
back the offer. The source is offered what those bids pay, less the flow's fee and our margin,
rounded down to the cent, so a commit that sells to them never pays the source more than they pay
us. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from routelead.domain.conditions import EXPIRY_KEY
from routelead.domain.money import CENT, ZERO, fmt
from routelead.domain.outcome import Attempt, Status

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class MarginRule:
    """Our margin on a quote: `fixed` or `percent` of the backing bids, never below `min_margin`."""

    fixed: Decimal | None = None
    percent: Decimal | None = None
    min_margin: Decimal = ZERO

    def margin(self, revenue: Decimal) -> Decimal:
        kept = self.fixed if self.fixed is not None else revenue * (self.percent or ZERO) / HUNDRED
        return max(kept, self.min_margin)


@dataclass(frozen=True, slots=True)
class QuoteLimits:
    """Per-source quote limits (None: unlimited)."""

    per_second: int | None = None
    per_day: int | None = None
    max_ping_post_ratio: int | None = None

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.per_second, self.per_day, self.max_ping_post_ratio))


@dataclass(frozen=True, slots=True)
class InboundTerms:
    """A source's inbound ping-post agreement (config `sources[].inbound`)."""

    margin: MarginRule
    ttl_s: float = 60.0
    limits: QuoteLimits = field(default_factory=QuoteLimits)


@dataclass(frozen=True, slots=True)
class Offer:
    """The price offered, and how it was reached: revenue - fee - margin = price."""

    price: Decimal
    revenue: Decimal
    fee: Decimal
    margin: Decimal


@dataclass(frozen=True, slots=True)
class NoOffer:
    reason: str


def offer(
    revenue: Decimal, fee: Decimal, rule: MarginRule, flow_min_margin: Decimal | None
) -> Offer | NoOffer:
    """The offer for bids paying `revenue` in all: never more than they pay after the fee and the
    margin (rounded down to the cent, so the margin is never less than the rule's)."""
    margin = rule.margin(revenue)
    if flow_min_margin is not None:
        margin = max(margin, flow_min_margin)
    price = (revenue - fee - margin).quantize(CENT, rounding=ROUND_DOWN)
    if price <= 0:
        fee_part = f", less the fee {fmt(fee)}" if fee else ""
        return NoOffer(
            f"the best bids pay {fmt(revenue)}{fee_part}: nothing is left after the margin {fmt(margin)}"
        )
    return Offer(price, revenue, fee, revenue - fee - price)


def no_offer_reason(attempts: Iterable[Attempt]) -> str:
    """Why an auction paused for a quote found no bid to back it, counted by attempt status."""
    counts = Counter(a.status for a in attempts)
    if not counts:
        return "no acceptable bid: the flow has no buyer to ask"
    shown = ", ".join(f"{n} {_STATUS_WORDS.get(s, s.value.lower())}" for s, n in counts.most_common())
    return f"no acceptable bid ({shown})"


def ping_expiry(conditions: object) -> float | None:
    """Seconds the buyer's bid stays valid (`expires_in_s` among its bid conditions), when it says."""
    if not isinstance(conditions, dict):
        return None
    raw = conditions.get(EXPIRY_KEY)
    if raw is None or isinstance(raw, bool):
        return None
    try:
        seconds = Decimal(str(raw))
    except ArithmeticError:
        return None
    return float(seconds) if seconds.is_finite() and seconds >= 0 else None


_STATUS_WORDS = {
    Status.NO_BID: "no bid",
    Status.TIMED_OUT: "timed out",
    Status.ERROR: "error",
    Status.BELOW_FLOOR: "below the floor",
    Status.CONDITION_FAILED: "bid condition failed",
    Status.SKIPPED_FILTER: "filtered out",
    Status.SKIPPED_CAP: "at cap",
    Status.SKIPPED_SCHEDULE: "closed",
    Status.SKIPPED_CIRCUIT: "circuit open",
    Status.PAUSED: "paused",
    Status.DUPLICATE_FOR_BUYER: "duplicate for the buyer",
    Status.NOT_OFFERED: "not offered",
}

__all__ = [
    "InboundTerms",
    "MarginRule",
    "NoOffer",
    "Offer",
    "QuoteLimits",
    "no_offer_reason",
    "offer",
    "ping_expiry",
]
