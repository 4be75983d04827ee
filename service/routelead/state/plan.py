"""What one reservation touches: every counter of a buyer for the current periods (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from routelead.state.periods import period_end, period_key
from routelead.state.ports import CapLimits, Period

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


def counters(caps: CapLimits, now: float, cents: int, scopes: tuple[str, ...] = ()) -> list[Counter]:
    """Every lead-count cap (+1) and dollar budget (+price) for the periods containing `now`:
    the buyer's totals and those for the lead's flow and source (`scopes`)."""
    tz = caps.timezone

    def ttl(period: Period) -> int:
        return int(period_end(period, now, tz) - now) + GRACE_S

    out = [Counter(f"n:{period_key(p, now, tz)}", n, 1, ttl(p)) for p, n in caps.limits]
    out += [Counter(f"usd:{period_key(p, now, tz)}", to_cents(d), cents, ttl(p)) for p, d in caps.budgets]
    out += [
        Counter(f"n:{s}:{period_key(p, now, tz)}", n, 1, ttl(p))
        for s, p, n in caps.scoped_limits
        if s in scopes
    ]
    out += [
        Counter(f"usd:{s}:{period_key(p, now, tz)}", to_cents(d), cents, ttl(p))
        for s, p, d in caps.scoped_budgets
        if s in scopes
    ]
    return out


def floor_cents(caps: CapLimits) -> int:
    """How low a prepaid balance may go."""
    return -to_cents(caps.credit_limit)


def describe(caps: CapLimits) -> str:
    parts = [f"{n}/{p}" for p, n in caps.limits] + [f"${b}/{p}" for p, b in caps.budgets]
    parts += [f"{n}/{p} for {s}" for s, p, n in caps.scoped_limits]
    parts += [f"${b}/{p} for {s}" for s, p, b in caps.scoped_budgets]
    if caps.prepaid:
        parts.append("prepaid balance")
    return ", ".join(parts)
