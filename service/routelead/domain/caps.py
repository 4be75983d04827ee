"""Caps, budgets and prepaid balances as plain values: what a buyer may take per period, and a
reservation of one lead against them. Shared by the configuration, the hot-state adapters and
telemetry, so it depends on nothing but the standard library."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

Period = Literal["hour", "day", "week", "month"]
PERIODS: tuple[Period, ...] = ("hour", "day", "week", "month")


@dataclass(frozen=True, slots=True)
class CapLimits:
    """A buyer's lead-count caps, dollar budgets and prepaid balance, counted in its own timezone."""

    buyer_id: str
    timezone: str
    limits: tuple[tuple[Period, int], ...]
    budgets: tuple[tuple[Period, Decimal], ...] = ()
    # Prepaid: a sale draws the balance down; it may go as low as −credit_limit.
    prepaid: bool = False
    credit_limit: Decimal = Decimal("0")
    # Caps and budgets of this buyer for leads of one flow or source ("flow=solar", "source=aff").
    scoped_limits: tuple[tuple[str, Period, int], ...] = ()
    scoped_budgets: tuple[tuple[str, Period, Decimal], ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.limits or self.budgets or self.prepaid or self.scoped_limits or self.scoped_budgets)


@dataclass(frozen=True, slots=True)
class Reservation:
    buyer_id: str
    keys: tuple[str, ...]
    lead_id: str
    # Identifies the reservation for settlement (unique per buyer).
    id: str = ""
    cents: int = 0
    budget_keys: tuple[str, ...] = ()
    prepaid: bool = False


@dataclass(frozen=True, slots=True)
class UnsettledSale:
    """A reservation whose outcome nobody recorded: still counted until settled."""

    buyer_id: str
    reservation_id: str
    lead_id: str
    amount: Decimal
    reserved_at: float
    state: Literal["unsettled", "orphaned"]
    reason: str
