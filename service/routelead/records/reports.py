"""Buyer performance and flow / source money from the ledger, over a time window.

One query path (SQLAlchemy Core) for SQLite and PostgreSQL: counts and money sums run in SQL; the
response-time percentiles are computed here from the attempts' `ping_ms`, because the two dialects
have no common percentile function. Test leads are left out everywhere.

Which rows count:
- buyer pings, bids, wins, posts, timeouts, errors: the attempts of leads *received* in the window;
- money (revenue, cost, margin): the journal (`entries`) *booked* in the window, net of returns,
  so a report agrees to the cent with `Ledger.totals` and with the rows it came from;
- suppliers' quotes (inbound ping-post): the quotes *made* in the window, an offered quote past
  its expiry with no commit counting as expired.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from routelead.records.schema import Money, attempts, entries, leads, quotes, sales

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
# Statuses of an attempt whose buyer was actually pinged (everything else was skipped before).
PINGED = (
    "NO_BID",
    "BID",
    "BELOW_FLOOR",
    "OUTBID",
    "TIMED_OUT",
    "ERROR",
    "POST_ACCEPTED",
    "POST_REJECTED",
    "POST_ERROR",
    "NOT_OFFERED",
    "CONDITION_FAILED",
)
# Pinged, answered with a price.
_NOT_A_BID = ("NO_BID", "TIMED_OUT", "ERROR")
POSTED = ("POST_ACCEPTED", "POST_REJECTED", "POST_ERROR")
By = Literal["flow", "source", "lead_type"]


@dataclass(frozen=True, slots=True)
class Window:
    """[since, until) in UTC, with a label for people."""

    label: str
    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("window bounds must carry a timezone")
        if self.until <= self.since:
            raise ValueError(f"window {self.label!r}: until must be after since")


def last_hour(now: datetime) -> Window:
    return Window("last hour", now - timedelta(hours=1), now)


def today(now: datetime, tz: tzinfo = UTC) -> Window:
    start = datetime.combine(now.astimezone(tz).date(), time(), tz)
    return Window(f"today ({start.date().isoformat()})", start, now)


def date_range(first: date, last: date, tz: tzinfo = UTC) -> Window:
    """Whole days from `first` to `last`, both included, in `tz`."""
    if last < first:
        raise ValueError(f"date range {first}..{last}: the last day is before the first")
    since = datetime.combine(first, time(), tz)
    until = datetime.combine(last + timedelta(days=1), time(), tz)
    return Window(f"{first.isoformat()}..{last.isoformat()}", since, until)


def by_day(first: date, last: date, tz: tzinfo = UTC) -> list[Window]:
    if last < first:
        raise ValueError(f"date range {first}..{last}: the last day is before the first")
    days = (last - first).days + 1
    if days > 366:
        raise ValueError("by day: at most 366 days at once")
    return [date_range(first + timedelta(days=i), first + timedelta(days=i), tz) for i in range(days)]


def _ratio(n: int, d: int) -> Decimal:
    """A rate as a fraction with 4 places (0.8333); 0 when there is nothing to divide."""
    return (Decimal(n) / Decimal(d)).quantize(Decimal("0.0001"), ROUND_HALF_UP) if d else Decimal("0")


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: a value that was actually observed; 0 for no values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


@dataclass(frozen=True, slots=True)
class BuyerReport:
    buyer_id: str
    pings: int
    bids: int
    wins: int
    posts: int
    accepted: int
    timeouts: int
    errors: int
    bid_total: Decimal
    revenue: Decimal
    p50_ms: float
    p95_ms: float
    p99_ms: float
    # Sales booked at the bid while the post answer stated another price (sold in the window).
    price_disputes: int = 0

    @property
    def bid_rate(self) -> Decimal:
        return _ratio(self.bids, self.pings)

    @property
    def avg_bid(self) -> Decimal:
        return _money(self.bid_total / self.bids) if self.bids else ZERO

    @property
    def win_rate(self) -> Decimal:
        return _ratio(self.wins, self.bids)

    @property
    def post_accept_rate(self) -> Decimal:
        return _ratio(self.accepted, self.posts)


@dataclass(frozen=True, slots=True)
class MoneyReport:
    key: str
    leads: int
    sold: int
    cost: Decimal
    revenue: Decimal

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def margin_pct(self) -> Decimal:
        """Margin as a percentage of revenue (2 places); 0 with no revenue."""
        if not self.revenue:
            return Decimal("0.00")
        return (self.margin * 100 / self.revenue).quantize(CENT, ROUND_HALF_UP)

    @property
    def revenue_per_ping(self) -> Decimal:
        """Revenue per lead the source sent us (each lead is one inbound ping)."""
        return _money(self.revenue / self.leads) if self.leads else ZERO


@dataclass(frozen=True, slots=True)
class SupplierReport:
    """A source's inbound quotes: how many were offered, and how they ended."""

    source_id: str
    quotes: int
    offers: int
    won: int
    lost: int
    expired: int

    @property
    def commits(self) -> int:
        return self.won + self.lost

    @property
    def win_rate(self) -> Decimal:
        """Offers that were committed and sold."""
        return _ratio(self.won, self.offers)

    @property
    def ping_post_ratio(self) -> Decimal:
        """Quotes per commit (2 places); 0 while nothing was committed."""
        return (Decimal(self.quotes) / self.commits).quantize(CENT, ROUND_HALF_UP) if self.commits else ZERO


@dataclass(frozen=True, slots=True)
class Report:
    window: Window
    buyers: list[BuyerReport] = field(default_factory=list)
    flows: list[MoneyReport] = field(default_factory=list)
    sources: list[MoneyReport] = field(default_factory=list)
    lead_types: list[MoneyReport] = field(default_factory=list)


def _sum_money(expr: Any) -> Any:
    return sa.type_coerce(sa.func.coalesce(sa.func.sum(expr), 0), Money)


def _count_if(cond: Any) -> Any:
    return sa.func.count(sa.case((cond, 1), else_=None))


class Reports:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def report(self, window: Window) -> Report:
        return Report(
            window,
            await self.buyers(window),
            await self.money("flow", window),
            await self.money("source", window),
            await self.money("lead_type", window),
        )

    async def buyers(self, window: Window, buyer_id: str | None = None) -> list[BuyerReport]:
        a = attempts.c
        in_window = sa.and_(
            leads.c.received_at >= window.since,
            leads.c.received_at < window.until,
            leads.c.test.is_(False),
        )
        bid = sa.and_(a.status.in_(PINGED), a.status.not_in(_NOT_A_BID), a.bid.is_not(None))
        counts = (
            sa.select(
                a.buyer_id,
                _count_if(a.status.in_(PINGED)),
                _count_if(bid),
                _count_if(a.status == "POST_ACCEPTED"),
                _count_if(a.status.in_(POSTED)),
                _count_if(a.status == "TIMED_OUT"),
                _count_if(a.status.in_(("ERROR", "POST_ERROR"))),
                _sum_money(sa.case((bid, a.bid), else_=None)),
            )
            .select_from(attempts.join(leads, leads.c.lead_id == a.lead_id))
            .where(in_window)
            .group_by(a.buyer_id)
        )
        times = (
            sa.select(a.buyer_id, a.ping_ms)
            .select_from(attempts.join(leads, leads.c.lead_id == a.lead_id))
            .where(in_window, a.status.in_(PINGED))
        )
        revenue = (
            sa.select(
                entries.c.buyer_id,
                _sum_money(entries.c.amount),
            )
            .where(
                entries.c.at >= window.since,
                entries.c.at < window.until,
                entries.c.buyer_id != "",
                entries.c.kind.in_(("revenue", "revenue_reversal")),
            )
            .group_by(entries.c.buyer_id)
        )
        disputed = (
            sa.select(sales.c.buyer_id, sa.func.count())
            .where(
                sales.c.sold_at >= window.since,
                sales.c.sold_at < window.until,
                sales.c.stated_price.is_not(None),
                sales.c.settlement == "sold",
                sales.c.test.is_(False),
            )
            .group_by(sales.c.buyer_id)
        )
        if buyer_id is not None:
            counts = counts.where(a.buyer_id == buyer_id)
            times = times.where(a.buyer_id == buyer_id)
            revenue = revenue.where(entries.c.buyer_id == buyer_id)
            disputed = disputed.where(sales.c.buyer_id == buyer_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(counts)).all()
            ms: dict[str, list[float]] = defaultdict(list)
            for b, v in await conn.execute(times):
                ms[str(b)].append(float(v))
            money = {str(b): r or ZERO for b, r in await conn.execute(revenue)}
            disputes = {str(b): int(n) for b, n in await conn.execute(disputed)}
        out: dict[str, BuyerReport] = {}
        for b, pings, bids, wins, posts, timeouts, errors, bid_total in rows:
            values = sorted(ms.get(str(b), []))
            accepted = wins
            out[str(b)] = BuyerReport(
                str(b),
                int(pings),
                int(bids),
                int(wins),
                int(posts),
                int(accepted),
                int(timeouts),
                int(errors),
                bid_total or ZERO,
                money.get(str(b), ZERO),
                percentile(values, 50),
                percentile(values, 95),
                percentile(values, 99),
                disputes.get(str(b), 0),
            )
        # A buyer with money in the window but no attempts (e.g. a late settlement) still shows.
        for b, r in money.items():
            if b not in out:
                out[b] = BuyerReport(b, 0, 0, 0, 0, 0, 0, 0, ZERO, r, 0.0, 0.0, 0.0, disputes.get(b, 0))
        return [out[k] for k in sorted(out)]

    async def money(self, by: By, window: Window, key: str | None = None) -> list[MoneyReport]:
        typed = by == "lead_type"
        lead_col = {"flow": leads.c.flow, "source": leads.c.source_id, "lead_type": leads.c.lead_type}[by]
        # The journal carries no lead type: its lead's (one not yet booked: '').
        entry_col = (
            sa.func.coalesce(leads.c.lead_type, "")
            if typed
            else entries.c.flow
            if by == "flow"
            else entries.c.source_id
        )
        counts = (
            sa.select(lead_col, sa.func.count(), _count_if(leads.c.outcome == "SOLD"))
            .where(
                leads.c.received_at >= window.since,
                leads.c.received_at < window.until,
                leads.c.test.is_(False),
            )
            .group_by(lead_col)
        )

        def kinds(*names: str) -> Any:
            return _sum_money(sa.case((entries.c.kind.in_(names), entries.c.amount), else_=None))

        money = (
            sa.select(entry_col, kinds("cost", "cost_reversal"), kinds("revenue", "revenue_reversal"))
            .select_from(entries.outerjoin(leads, leads.c.lead_id == entries.c.lead_id) if typed else entries)
            .where(entries.c.at >= window.since, entries.c.at < window.until)
            .group_by(entry_col)
        )
        if key is not None:
            counts = counts.where(lead_col == key)
            money = money.where(entry_col == key)
        async with self.engine.connect() as conn:
            n = {str(k): (int(c), int(s)) for k, c, s in await conn.execute(counts)}
            m = {str(k): (c or ZERO, r or ZERO) for k, c, r in await conn.execute(money)}
        return [
            MoneyReport(k, *n.get(k, (0, 0)), *m.get(k, (ZERO, ZERO))) for k in sorted(n.keys() | m.keys())
        ]

    async def suppliers(
        self, window: Window, source_id: str | None = None, now: datetime | None = None
    ) -> list[SupplierReport]:
        """Per source, the quotes made in the window (records/quotes.py)."""
        q = quotes.c
        now = now or datetime.now(UTC)
        lapsed = sa.or_(q.state == "expired", sa.and_(q.state == "offered", q.expires_at <= now))
        query = (
            sa.select(
                q.source_id,
                sa.func.count(),
                _count_if(q.state != "no_offer"),
                _count_if(q.state == "won"),
                _count_if(q.state == "lost"),
                _count_if(lapsed),
            )
            .where(q.quoted_at >= window.since, q.quoted_at < window.until)
            .group_by(q.source_id)
            .order_by(q.source_id)
        )
        if source_id is not None:
            query = query.where(q.source_id == source_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [SupplierReport(str(k), int(n), int(o), int(w), int(lo), int(e)) for k, n, o, w, lo, e in rows]

    async def post_accept_rates(self, since: datetime) -> dict[str, tuple[int, int]]:
        """(accepted, posted) per buyer since `since`: what the ranking's BuyerStats is seeded from."""
        a = attempts.c
        q = (
            sa.select(a.buyer_id, _count_if(a.status == "POST_ACCEPTED"), sa.func.count())
            .select_from(attempts.join(leads, leads.c.lead_id == a.lead_id))
            .where(leads.c.received_at >= since, leads.c.test.is_(False), a.status.in_(POSTED))
            .group_by(a.buyer_id)
        )
        async with self.engine.connect() as conn:
            return {str(b): (int(acc), int(n)) for b, acc, n in await conn.execute(q)}


def windows(
    kind: str,
    now: datetime,
    *,
    first: date | None = None,
    last: date | None = None,
    split_by_day: bool = False,
    tz: tzinfo = UTC,
) -> list[Window]:
    """The windows a caller asked for: "last_hour", "today" or "range" (whole days, optionally one
    window per day). Raises ValueError with what is wrong."""
    kind = kind or "last_hour"
    if kind == "last_hour":
        return [last_hour(now)]
    if kind == "today":
        if split_by_day:
            raise ValueError("by_day needs window 'range'")
        return [today(now, tz)]
    if kind == "range":
        if first is None or last is None:
            raise ValueError("window 'range' needs from_date and to_date (YYYY-MM-DD)")
        return by_day(first, last, tz) if split_by_day else [date_range(first, last, tz)]
    raise ValueError(f"window {kind!r}: use last_hour, today or range")
