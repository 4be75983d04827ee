"""Why a buyer with an acceptable bid did not buy the lead: one sentence a person can act on.

Pure: the router hands over where each bidder stood in the tree (tier, offer place, bid, ranking
value, priority) and who bought. The reason names what decided it — a higher tier, the waterfall
order, priority, the rotation turn, the ranking score, a lower bid, or the exclusive-vs-shared
allocation — never just "outbid" when the bid was higher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from routelead.domain.money import fmt
from routelead.domain.tree import Ranking, TierMode, TierOrder


@dataclass(frozen=True, slots=True)
class TierRule:
    name: str
    mode: TierMode
    order: TierOrder


@dataclass(frozen=True, slots=True)
class Standing:
    """One bidder where the tree left it. For a buyer that bought, `price` and `exclusive` are
    the sale's; for one never asked (a waterfall that stopped before it), `price` is None."""

    buyer_id: str
    tier: int  # index into the flow's tiers
    place: int  # position in its tier's offer order (rotation or waterfall order)
    price: Decimal | None
    value: Decimal  # what the ranking compared (price, expected revenue or score)
    priority: int
    exclusive: bool


def why_lost(
    loser: Standing, winners: Sequence[Standing], tiers: Sequence[TierRule], ranking: Ranking, max_buyers: int
) -> str:
    """The reason an acceptable bid did not sell, given the buyers that did (in sale order)."""
    names = _names(winners)
    peers = [w for w in winners if w.tier == loser.tier]
    if not peers:
        if loser.exclusive and not any(w.exclusive for w in winners):
            return f"exclusive bid: the lead was sold shared to {names}, which an exclusive sale cannot join"
        higher = min(w.tier for w in winners)
        if higher < loser.tier:
            return f"not needed: sold in tier {tiers[higher].name!r} to {names}"
        return f"not offered: sold to {names} first"
    rule = tiers[loser.tier]
    if rule.mode == "waterfall":
        return _waterfall(loser, peers, rule, winners)
    if max_buyers > 1:
        if loser.exclusive and not any(w.exclusive for w in peers):
            together = sum((w.value for w in peers), Decimal(0))
            if together > loser.value:
                return (
                    f"exclusive bid at {_price(loser)}: the shared sale to {names} was worth more "
                    f"together ({_worth(together, ranking)} against {_worth(loser.value, ranking)})"
                )
            return f"exclusive bid: the lead was sold shared to {names}, which an exclusive sale cannot join"
        if len(peers) == 1 and peers[0].exclusive and not loser.exclusive:
            w = peers[0]
            return (
                f"sold exclusively to {_name(w)}, worth more than the shared bids together "
                f"({_worth(w.value, ranking)})"
            )
    # Beaten by the weakest buyer that did get the lead: the last one offered.
    w = max(peers, key=lambda p: p.place) if rule.order in ("round_robin", "weighted") else peers[-1]
    reason = _ranked_below(loser, w, rule, ranking)
    if max_buyers > 1 and len(winners) >= max_buyers:
        return f"all {max_buyers} shared places went to bids ranked above it ({names}); {reason}"
    return reason


def _ranked_below(loser: Standing, w: Standing, rule: TierRule, ranking: Ranking) -> str:
    if rule.order in ("round_robin", "weighted"):
        return (
            f"ranked below by rotation: this lead's {rule.order.replace('_', '-')} turn offered "
            f"{_name(w)} before this bid at {_price(loser)}"
        )
    if rule.order == "priority" and w.priority != loser.priority:
        return _by_priority(loser, w)
    if w.value != loser.value:
        if ranking == "price":
            return f"lower bid: {_name(w)}, against this bid at {_price(loser)}"
        what = "expected revenue (bid x post-accept rate)" if ranking == "expected_revenue" else "score"
        return (
            f"ranked below by {what}: {_worth(w.value, ranking)} for {_name(w)}, against "
            f"{_worth(loser.value, ranking)} for this bid at {_price(loser)}"
        )
    tied = "an equal bid" if ranking == "price" else f"an equal {ranking.replace('_', ' ')}"
    if w.priority != loser.priority:
        return f"{tied}, then {_by_priority(loser, w)}"
    return f"{tied} and priority: {_name(w)} comes first in the tier"


def _by_priority(loser: Standing, w: Standing) -> str:
    return (
        f"ranked below by priority: {w.priority} for {_name(w)}, against {loser.priority} "
        f"for this bid at {_price(loser)}"
    )


def _waterfall(
    loser: Standing, peers: Sequence[Standing], rule: TierRule, winners: Sequence[Standing]
) -> str:
    first = min(peers, key=lambda p: p.place)
    if first.place > loser.place:
        # Offered before the buyer that bought, yet not sold: its exclusive bid met a shared sale.
        return (
            f"exclusive bid: the lead was sold shared to {_names(winners)}, "
            "which an exclusive sale cannot join"
        )
    if rule.order == "priority" and first.priority != loser.priority:
        ahead = f"priority {first.priority} against {loser.priority}"
    elif rule.order in ("round_robin", "weighted"):
        ahead = "its rotation turn came first"
    elif rule.order == "bid":
        ahead = "a higher fixed price"
    else:
        ahead = "earlier in the tier"
    return f"not reached in the waterfall: {_name(first)} came first ({ahead}) and bought"


def _name(w: Standing) -> str:
    return f"{w.buyer_id} at {_price(w)}"


def _names(winners: Sequence[Standing]) -> str:
    return ", ".join(_name(w) for w in winners)


def _price(s: Standing) -> str:
    return fmt(s.price) if s.price is not None else "no price yet"


def _worth(value: Decimal, ranking: Ranking) -> str:
    if ranking == "score":
        return f"{value.quantize(Decimal('0.001'))}"
    return fmt(value)
