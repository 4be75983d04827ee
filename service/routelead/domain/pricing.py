"""Pricing (seed 003): cost from the source, revenue from the buyer, margin in between.

Rules are applied in order and every one is evaluated: a matching `set` replaces the price so
far, a matching `add` adds to it — so the last matching `set` wins and "exclusive → +$10"
lands on top of the state price. Amounts keep their fractional cents while computing and are
rounded once, half-up to the cent, when the lead's money is booked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from routelead.domain.money import to_cents
from routelead.domain.rules import Facts, Rule, uses_volume

HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class PriceRule:
    when: Rule
    action: Literal["set", "add"]
    amount: Decimal


@dataclass(frozen=True, slots=True)
class PriceBook:
    rules: tuple[PriceRule, ...] = ()

    @property
    def uses_volume(self) -> bool:
        return any(uses_volume(r.when) for r in self.rules)

    def apply(self, start: Decimal, facts: Facts) -> Decimal:
        price = start
        for rule in self.rules:
            if rule.when.failure(facts) is None:
                price = rule.amount if rule.action == "set" else price + rule.amount
        return max(price, Decimal(0))


@dataclass(frozen=True, slots=True)
class SourcePricing:
    """What we pay a source for one lead: a default, a vendor-supplied price, rules, a share."""

    default: Decimal
    book: PriceBook = PriceBook()
    # A lead field the source fills with its own price (seed 003 "source_price").
    price_field: str | None = None
    # Percent of the lead's revenue paid to the source on top of the fixed cost (revenue share).
    revenue_share: Decimal = Decimal(0)

    def fixed_cost(self, facts: Facts) -> Decimal:
        start = self.default
        if self.price_field is not None and (given := facts.fields.get(self.price_field)) is not None:
            start = Decimal(given)
        return self.book.apply(start, facts)

    def cost(self, fixed: Decimal, revenue: Decimal) -> Decimal:
        return fixed + revenue * self.revenue_share / HUNDRED

    def margin_floor(self, fixed: Decimal, fee: Decimal, min_margin: Decimal) -> Decimal:
        """The least a single buyer must pay for the sale to keep `min_margin`:
        price - (fixed + fee + price x share) >= min_margin."""
        keep = Decimal(1) - self.revenue_share / HUNDRED
        if keep <= 0:
            return Decimal("Infinity")
        return (fixed + fee + min_margin) / keep


@dataclass(frozen=True, slots=True)
class Booked:
    """The lead's money, rounded once: totals plus each sale's revenue, cost share and margin."""

    cost: Decimal
    revenue: Decimal
    margin: Decimal
    sale_costs: tuple[Decimal, ...]


def book(cost: Decimal, prices: Sequence[Decimal]) -> Booked:
    """Round the totals once; split the cost over the sales in proportion to their revenue so
    each sale carries its own margin and the sales add up to the lead exactly (the rounding
    remainder goes to the last sale)."""
    total_cost, revenue = to_cents(cost), to_cents(sum(prices, Decimal(0)))
    shares: list[Decimal] = []
    if prices:
        left = total_cost
        for i, price in enumerate(prices):
            if i == len(prices) - 1:
                share = left
            else:
                share = (
                    to_cents(total_cost * price / revenue) if revenue else to_cents(total_cost / len(prices))
                )
            shares.append(share)
            left -= share
    return Booked(total_cost, revenue, revenue - total_cost, tuple(shares))
