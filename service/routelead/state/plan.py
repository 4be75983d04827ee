"""What one reservation touches: every counter of a buyer for the current periods (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from routelead.state.periods import period_end, period_key
from routelead.state.ports import PERIODS, CapLimits, Period

# Counters outlive their period a little, so a late release still finds the key it counted in.
GRACE_S = 3600
# The limit of a counter no cap or budget is set on: counted, never full (exact in Lua's doubles).
UNLIMITED = 2**53


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


def counters(
    caps: CapLimits, now: float, cents: int, scopes: tuple[str, ...] = (), *, every: bool = True
) -> list[Counter]:
    """Every lead-count cap (+1) and dollar budget (+price) for the periods containing `now`:
    the buyer's totals and those for the lead's flow and source (`scopes`), the capped ones first.

    `every`: also each period and scope with no cap or budget on it (limit UNLIMITED): every
    sale is counted for every buyer, so a cap added mid-period counts the period's earlier
    sales. False: only the counters with a limit, which is all a room check needs."""
    tz = caps.timezone
    seen: dict[Period, tuple[str, int]] = {}

    def at(period: Period) -> tuple[str, int]:
        # Each period's key and time to live, worked out once for all the counters sharing it.
        if (found := seen.get(period)) is None:
            end = period_end(period, now, tz)
            found = seen[period] = (period_key(period, now, tz), int(end - now) + GRACE_S)
        return found

    out = [Counter(f"n:{at(p)[0]}", n, 1, at(p)[1]) for p, n in caps.limits]
    out += [Counter(f"usd:{at(p)[0]}", to_cents(d), cents, at(p)[1]) for p, d in caps.budgets]
    out += [Counter(f"n:{s}:{at(p)[0]}", n, 1, at(p)[1]) for s, p, n in caps.scoped_limits if s in scopes]
    out += [
        Counter(f"usd:{s}:{at(p)[0]}", to_cents(d), cents, at(p)[1])
        for s, p, d in caps.scoped_budgets
        if s in scopes
    ]
    if every:
        capped = {c.name for c in out}
        for scope in ("", *(f"{s}:" for s in scopes)):
            for p in PERIODS:
                key, ttl = at(p)
                for name, add in ((f"n:{scope}{key}", 1), (f"usd:{scope}{key}", cents)):
                    if name not in capped:
                        out.append(Counter(name, UNLIMITED, add, ttl))
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
