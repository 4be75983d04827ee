"""Read recorded leads (non-test) with their attempts and sold sales from the ledger, in pages."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from routelead.records.schema import attempts, leads, sales
from routelead.replay.engine import RecordedAttempt, RecordedLead, RecordedSale

PAGE = 500


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


async def recorded_leads(
    engine: AsyncEngine,
    since: datetime,
    until: datetime,
    flow: str | None = None,
    lead_type: str | None = None,
) -> AsyncIterator[RecordedLead]:
    """Oldest first, a page at a time, so a long range never sits in memory at once."""
    after: tuple[datetime, str] | None = None
    async with engine.connect() as conn:
        while True:
            q = (
                sa.select(leads)
                .where(leads.c.received_at >= since, leads.c.received_at < until, leads.c.test.is_(False))
                .order_by(leads.c.received_at, leads.c.lead_id)
                .limit(PAGE)
            )
            if flow is not None:
                q = q.where(leads.c.flow == flow)
            if lead_type is not None:
                q = q.where(leads.c.lead_type == lead_type)
            if after is not None:
                q = q.where(sa.tuple_(leads.c.received_at, leads.c.lead_id) > sa.tuple_(*after))
            page = (await conn.execute(q)).all()
            if not page:
                return
            ids = [r.lead_id for r in page]
            tried: dict[str, list[RecordedAttempt]] = defaultdict(list)
            for a in await conn.execute(
                sa.select(attempts).where(attempts.c.lead_id.in_(ids)).order_by(attempts.c.seq)
            ):
                tried[a.lead_id].append(
                    RecordedAttempt(a.buyer_id, a.status, a.bid, a.offered, bool(a.exclusive))
                )
            sold: dict[str, list[RecordedSale]] = defaultdict(list)
            for s in await conn.execute(
                sa.select(sales)
                .where(sales.c.lead_id.in_(ids), sales.c.settlement == "sold")
                .order_by(sales.c.sold_at, sales.c.buyer_id)
            ):
                sold[s.lead_id].append(RecordedSale(s.buyer_id, s.price, s.cost))
            for r in page:
                yield RecordedLead(
                    r.lead_id,
                    r.flow,
                    r.source_id,
                    _utc(r.received_at),
                    dict(r.ping_fields),
                    r.cost,
                    tuple(tried[r.lead_id]),
                    tuple(sold[r.lead_id]),
                )
            last = page[-1]
            after = (last.received_at, last.lead_id)
