"""Whether a buyer may return a sold lead: pure rules, no I/O (the ledger applies the answer)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class ReturnPolicy:
    """A buyer's return terms, and whether the source refunds its cost for a returned lead."""

    window_s: float
    max_rate: Decimal  # returns / sales over `rate_window_s`, 0..1
    rate_window_s: float = 30 * DAY_S
    refund_cost: bool = False


class ReturnRefused(Exception):
    """A return the ledger does not accept; the message says why (no lead data in it)."""


def check_return(
    policy: ReturnPolicy,
    *,
    settlement: str,
    test: bool,
    sold_at: float,
    now: float,
    sales_in_window: int,
    returns_in_window: int,
) -> None:
    """Raise ReturnRefused unless this sale may be returned now."""
    if policy.window_s <= 0:
        raise ReturnRefused("this buyer's terms allow no returns")
    if test:
        raise ReturnRefused("test leads are not billed, so cannot be returned")
    if settlement != "sold":
        raise ReturnRefused(f"the sale is {settlement}, not sold")
    if now - sold_at > policy.window_s:
        raise ReturnRefused(f"past the return window of {policy.window_s / DAY_S:g} days")
    if now < sold_at:
        raise ReturnRefused("the return predates the sale")
    allowed = policy.max_rate * max(sales_in_window, 1)
    if returns_in_window + 1 > allowed:
        raise ReturnRefused(
            f"return rate limit: {returns_in_window} of {sales_in_window} sales in the last "
            f"{policy.rate_window_s / DAY_S:g} days already returned (max {policy.max_rate:%})"
        )


def policy_for(
    buyer_returns: Mapping[str, tuple[int, Decimal]], refund_cost: bool, buyer_id: str
) -> ReturnPolicy:
    """The terms from configuration; a buyer without `returns` gets a zero-day window."""
    days, rate = buyer_returns.get(buyer_id, (0, Decimal("0")))
    return ReturnPolicy(window_s=days * DAY_S, max_rate=rate, refund_cost=refund_cost)
