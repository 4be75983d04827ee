"""The ping tree: tier order modes, rotation, ranking values, and the exclusive-vs-shared allocation.

Pure functions over plain values; the router feeds them bids and turn numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

TierMode = Literal["auction", "waterfall"]
TierOrder = Literal["bid", "priority", "round_robin", "weighted"]
Ranking = Literal["price", "expected_revenue", "score"]


def smooth_weighted_sequence(weights: Sequence[int]) -> tuple[int, ...]:
    """Nginx's smooth weighted round-robin over one full cycle: indexes interleaved by weight.

    Weights 5, 1, 1 give a, a, b, a, c, a, a rather than a run of five a's.
    """
    total = sum(weights)
    current = [0] * len(weights)
    out = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: (current[i], -i))
        current[best] -= total
        out.append(best)
    return tuple(out)


def rotation(n: int, turn: int, sequence: Sequence[int] | None = None) -> list[int]:
    """The order of n buyers for this turn: who starts rotates; the rest follow in cycle order.

    With a weighted `sequence`, the starter is sequence[turn]; others follow by their next appearance.
    """
    if n == 0:
        return []
    if not sequence:
        start = turn % n
        return [(start + k) % n for k in range(n)]
    pos = turn % len(sequence)
    seen: list[int] = []
    for k in range(len(sequence)):
        i = sequence[(pos + k) % len(sequence)]
        if i not in seen:
            seen.append(i)
    return seen + [i for i in range(n) if i not in seen]


@dataclass(frozen=True, slots=True)
class ScoreWeights:
    """Seed 000's weighted score: price 50 %, historical acceptance 30 %, payment speed 20 %."""

    price: Decimal = Decimal("0.5")
    acceptance: Decimal = Decimal("0.3")
    payment: Decimal = Decimal("0.2")


def value(
    ranking: Ranking,
    price: Decimal,
    accept_rate: Decimal,
    payment_days: int,
    top_price: Decimal,
    weights: ScoreWeights,
) -> Decimal:
    """What one bid is worth for ranking. `score` normalises price to the best bid so the
    terms are comparable; payment speed scores 1 for same-day payment, ½ at 30 days."""
    if ranking == "price":
        return price
    if ranking == "expected_revenue":
        return price * accept_rate
    price_term = price / top_price if top_price > 0 else Decimal(0)
    payment_term = Decimal(30) / (Decimal(30) + Decimal(payment_days))
    return weights.price * price_term + weights.acceptance * accept_rate + weights.payment * payment_term


@dataclass(frozen=True, slots=True)
class Offer:
    """One acceptable bid in a tier, in rank order, with the value the allocation compares."""

    key: str
    price: Decimal
    value: Decimal
    exclusive: bool


def allocate(ranked: Sequence[Offer], slots: int, shared_only: bool) -> list[Offer]:
    """Who to post to next: the best exclusive bid alone, or the top shared bids together.

    `ranked` is in offer order. With one slot the first offer simply wins. With several, the
    exclusive bid is taken only when it is worth more than the shared bids it would displace;
    once any shared sale exists (`shared_only`), exclusive bids are out.
    """
    if slots <= 0 or not ranked:
        return []
    if slots == 1 and not shared_only:
        return [ranked[0]]
    shared = [o for o in ranked if not o.exclusive][:slots]
    if shared_only:
        return shared
    exclusive = next((o for o in ranked if o.exclusive), None)
    if exclusive is not None and exclusive.value >= sum((o.value for o in shared), Decimal(0)):
        return [exclusive]
    return shared
