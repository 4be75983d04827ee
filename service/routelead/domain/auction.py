"""Bids to an offer order: floors, tiers, ranking. Pure; the router does the posting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from routelead.domain.money import fmt
from routelead.domain.outcome import Attempt, Status


@dataclass(frozen=True, slots=True)
class Candidate:
    """A bid that may be offered the lead, with what ranks it."""

    attempt: Attempt
    tier_index: int
    priority: int
    order: int  # position in the config, the last tie-breaker, so ranking is deterministic

    @property
    def price(self) -> Decimal:
        assert self.attempt.price is not None
        return self.attempt.price


def rank(candidates: Sequence[Candidate], floor: Decimal) -> list[Candidate]:
    """The order in which to offer the lead: tiers top-down, then highest bid, then priority.

    Bids under the floor are marked BELOW_FLOOR and left out.
    """
    acceptable: list[Candidate] = []
    for c in candidates:
        if c.price < floor or c.price <= 0:
            c.attempt.status = Status.BELOW_FLOOR
            c.attempt.reason = f"bid {fmt(c.price)} is below the floor {fmt(floor)}"
        else:
            acceptable.append(c)
    acceptable.sort(key=lambda c: (c.tier_index, -c.price, -c.priority, c.order))
    return acceptable


def mark_losers(offers: Sequence[Candidate], winner: Attempt | None) -> None:
    """Acceptable bids that were never offered: outbid by the winner, or out of time."""
    for c in offers:
        a = c.attempt
        if a.status is not Status.BID or a is winner:
            continue
        if winner is not None:
            a.status = Status.OUTBID
            won = fmt(winner.price or Decimal(0))
            if winner.tier != a.tier:
                a.reason = f"{winner.buyer_id} in the higher tier {winner.tier!r} won at {won}"
            else:
                a.reason = f"outbid: {winner.buyer_id} won at {won}"
        else:
            a.status = Status.NOT_OFFERED
            a.reason = "acceptable bid, but the deadline ran out before it could be offered"
