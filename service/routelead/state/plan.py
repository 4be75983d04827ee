"""What one reservation touches: every counter of a buyer for the current periods (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from routelead.state.periods import period_end, period_key
from routelead.state.ports import CapLimits

# Counters outlive their period a little, so a late release still finds the key it counted in.
GRACE_S = 3600


@dataclass(frozen=True, slots=True)
class Counter:
    name: str  # "n:day:2026-11-22" (leads) or "usd:day:2026-11-22" (cents)
    limit: int
    add: int
    ttl_s: int

    @property
    def budget(self) -> bool:
        return self.name.startswith("usd:")


def to_cents(amount: Decimal) -> int:
    return int(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) * 100)


def from_cents(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def counters(caps: CapLimits, now: float, cents: int) -> list[Counter]:
    """Every lead-count cap (+1) and dollar budget (+price) for the periods containing `now`."""
    out: list[Counter] = []
    for period, limit in caps.limits:
        ttl = int(period_end(period, now, caps.timezone) - now) + GRACE_S
        out.append(Counter(f"n:{period_key(period, now, caps.timezone)}", limit, 1, ttl))
    for period, budget in caps.budgets:
        ttl = int(period_end(period, now, caps.timezone) - now) + GRACE_S
        out.append(Counter(f"usd:{period_key(period, now, caps.timezone)}", to_cents(budget), cents, ttl))
    return out


def floor_cents(caps: CapLimits) -> int:
    """How low a prepaid balance may go."""
    return -to_cents(caps.credit_limit)


def describe(caps: CapLimits) -> str:
    parts = [f"{n}/{p}" for p, n in caps.limits] + [f"${b}/{p}" for p, b in caps.budgets]
    if caps.prepaid:
        parts.append("prepaid balance")
    return ", ".join(parts)
