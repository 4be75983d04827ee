"""GetStats results as immutable values: money and rates as Decimal, times as aware datetimes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from routelead.v1 import stats_pb2 as pb


@dataclass(frozen=True, slots=True)
class BuyerStats:
    buyer_id: str
    pings: int
    bids: int
    # Rates are fractions (Decimal("0.8333")), not percentages.
    bid_rate: Decimal
    avg_bid: Decimal
    wins: int
    win_rate: Decimal
    posts: int
    accepted: int
    post_accept_rate: Decimal
    p50_ms: float
    p95_ms: float
    p99_ms: float
    timeouts: int
    errors: int
    revenue: Decimal
    # Sales booked at the bid while the post answer stated another price.
    price_disputes: int = 0


@dataclass(frozen=True, slots=True)
class MoneyStats:
    """One flow's or one source's leads and money; `key` is its id."""

    key: str
    leads: int
    sold: int
    revenue_per_ping: Decimal
    cost: Decimal
    revenue: Decimal
    margin: Decimal
    margin_pct: Decimal


@dataclass(frozen=True, slots=True)
class SupplierStats:
    """One source's inbound quotes (Quote / Commit) made in the window."""

    source_id: str
    quotes: int
    offers: int
    won: int
    lost: int
    expired: int
    win_rate: Decimal
    # Quotes per commit; 0 while nothing was committed.
    ping_post_ratio: Decimal


@dataclass(frozen=True, slots=True)
class WindowStats:
    label: str
    since: datetime
    # Exclusive.
    until: datetime
    buyers: tuple[BuyerStats, ...]
    flows: tuple[MoneyStats, ...]
    sources: tuple[MoneyStats, ...]
    # By lead type (vertical).
    lead_types: tuple[MoneyStats, ...] = ()
    suppliers: tuple[SupplierStats, ...] = ()


def _dec(text: str) -> Decimal:
    return Decimal(text) if text else Decimal("0")


def _buyer(b: pb.BuyerStats) -> BuyerStats:
    return BuyerStats(
        buyer_id=b.buyer_id,
        pings=b.pings,
        bids=b.bids,
        bid_rate=_dec(b.bid_rate),
        avg_bid=_dec(b.avg_bid),
        wins=b.wins,
        win_rate=_dec(b.win_rate),
        posts=b.posts,
        accepted=b.accepted,
        post_accept_rate=_dec(b.post_accept_rate),
        p50_ms=b.p50_ms,
        p95_ms=b.p95_ms,
        p99_ms=b.p99_ms,
        timeouts=b.timeouts,
        errors=b.errors,
        revenue=_dec(b.revenue),
        price_disputes=b.price_disputes,
    )


def _money(m: pb.MoneyStats) -> MoneyStats:
    return MoneyStats(
        key=m.key,
        leads=m.leads,
        sold=m.sold,
        revenue_per_ping=_dec(m.revenue_per_ping),
        cost=_dec(m.cost),
        revenue=_dec(m.revenue),
        margin=_dec(m.margin),
        margin_pct=_dec(m.margin_pct),
    )


def windows_from_proto(reply: pb.GetStatsResponse) -> list[WindowStats]:
    return [
        WindowStats(
            label=w.label,
            since=datetime.fromisoformat(w.since),
            until=datetime.fromisoformat(w.until),
            buyers=tuple(_buyer(b) for b in w.buyers),
            flows=tuple(_money(m) for m in w.flows),
            sources=tuple(_money(m) for m in w.sources),
            lead_types=tuple(_money(m) for m in w.lead_types),
            suppliers=tuple(
                SupplierStats(
                    q.source_id,
                    q.quotes,
                    q.offers,
                    q.won,
                    q.lost,
                    q.expired,
                    _dec(q.win_rate),
                    _dec(q.ping_post_ratio),
                )
                for q in w.suppliers
            ),
        )
        for w in reply.windows
    ]
