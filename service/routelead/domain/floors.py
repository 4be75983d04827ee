"""Floors: the minimum acceptable price for a tier, for an exclusive sale, and dynamic multipliers.

Seed 000's dynamic floor: base × quality multiplier, × a premium during business hours.
The quality multiplier comes from rules evaluated in order, the last match winning.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from routelead.domain.rules import Facts, Rule
from routelead.domain.schedule import Schedule

ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class QualityStep:
    when: Rule
    multiplier: Decimal


@dataclass(frozen=True, slots=True)
class FloorPolicy:
    base: Decimal
    exclusive: Decimal | None = None
    quality: tuple[QualityStep, ...] = ()
    business_hours: Schedule | None = None
    business_hours_multiplier: Decimal = ONE

    def multiplier(self, facts: Facts, now: datetime) -> Decimal:
        m = ONE
        for step in self.quality:  # all evaluated; the last that matches wins
            if step.when.failure(facts) is None:
                m = step.multiplier
        if self.business_hours is not None and self.business_hours.closed_reason(now) is None:
            m *= self.business_hours_multiplier
        return m

    def for_tier(self, tier_floor: Decimal | None, facts: Facts, now: datetime) -> Floors:
        """The floors of one tier for one lead. A tier's own floor replaces the flow's floors,
        exclusive one included: a catch-all tier buys at its minimum price, whatever the flow's."""
        m = self.multiplier(facts, now)
        if tier_floor is not None:
            return Floors(tier_floor * m, None)
        exclusive = self.exclusive * m if self.exclusive is not None else None
        return Floors(self.base * m, exclusive)


@dataclass(frozen=True, slots=True)
class Floors:
    shared: Decimal
    exclusive: Decimal | None

    def for_bid(self, exclusive: bool) -> Decimal:
        if exclusive and self.exclusive is not None:
            return max(self.shared, self.exclusive)
        return self.shared
