"""What one reservation touches: every counter of a buyer for the current periods (pure)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import NamedTuple

from routelead.domain.periods import period_end, period_key
from routelead.state.ports import PERIODS, CapLimits, Period

# Counters outlive their period a little, so a late release still finds the key it counted in.
GRACE_S = 3600
# The limit of a counter no cap or budget is set on: counted, never full (exact in Lua's doubles).
UNLIMITED = 2**53


class Counter(NamedTuple):
    # A tuple: up to 24 are built per reservation, and a frozen dataclass costs twice as much.
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
    keys, ends = _periods(caps.timezone, now)

    def at(period: Period) -> tuple[str, int]:
        i = PERIODS.index(period)
        return keys[i], int(ends[i] - now) + GRACE_S

    out = [Counter(f"n:{at(p)[0]}", n, 1, at(p)[1]) for p, n in caps.limits]
    out += [Counter(f"usd:{at(p)[0]}", to_cents(d), cents, at(p)[1]) for p, d in caps.budgets]
    out += [Counter(f"n:{s}:{at(p)[0]}", n, 1, at(p)[1]) for s, p, n in caps.scoped_limits if s in scopes]
    out += [
        Counter(f"usd:{s}:{at(p)[0]}", to_cents(d), cents, at(p)[1])
        for s, p, d in caps.scoped_budgets
        if s in scopes
    ]
    if every:
        capped = {c.name for c in out} if out else ()
        ttls = [int(end - now) + GRACE_S for end in ends]
        for name, i, budget in _every_name(keys, scopes):
            if name not in capped:
                out.append(Counter(name, UNLIMITED, cents if budget else 1, ttls[i]))
    return out


# Per timezone: the current periods' keys and ends, and from when they were worked out (a clock
# set back before that instant, as tests do, works them out again).
_PERIOD_CACHE: dict[str, tuple[float, float, tuple[str, ...], tuple[float, ...]]] = {}


def _periods(tz: str, now: float) -> tuple[tuple[str, ...], tuple[float, ...]]:
    found = _PERIOD_CACHE.get(tz)
    if found is not None and found[0] <= now < found[1]:
        return found[2], found[3]
    keys = tuple(period_key(p, now, tz) for p in PERIODS)
    ends = tuple(period_end(p, now, tz) for p in PERIODS)
    if len(_PERIOD_CACHE) > 1024:  # timezones are few; this only bounds a pathological config
        _PERIOD_CACHE.clear()
    _PERIOD_CACHE[tz] = (now, min(ends), keys, ends)
    return keys, ends


@lru_cache(maxsize=4096)
def _every_name(keys: tuple[str, ...], scopes: tuple[str, ...]) -> tuple[tuple[str, int, bool], ...]:
    """Every counter name of one reservation: (name, index of its period, a budget's)."""
    return tuple(
        (f"{kind}:{scope}{key}", i, kind == "usd")
        for scope in ("", *(f"{s}:" for s in scopes))
        for i, key in enumerate(keys)
        for kind in ("n", "usd")
    )


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
