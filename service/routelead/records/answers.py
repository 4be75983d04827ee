"""A past answer, rebuilt from the books, for a caller that retries a lead_id after a restart.

The in-memory idempotency store forgets every answer when the process stops; the books do not.
Without this, a retry that reached a restarted embedded service was routed again: a second sale.
A lead whose routing process died after its first post has no record, but has its intents
(`records/intents.py`): its answer is what they and the sales say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from routelead.domain.outcome import TEST_KEY_PREFIX, Attempt, Outcome, RoutingResult, Sale, Status
from routelead.records.codec import checks_from
from routelead.records.intents import answer_from_intents
from routelead.records.schema import attempts, intents, leads, sales


async def recent_lead_ids(engine: AsyncEngine, since: datetime, limit: int) -> list[str]:
    """The newest `limit` lead_ids received (or offered to a buyer) since `since`: the ones a
    caller may still retry (as answer keys: a test lead's is "~<lead_id>")."""
    answered = sa.select(leads.c.lead_id.label("lead_id"), leads.c.received_at.label("at")).where(
        leads.c.received_at >= since
    )
    offered = sa.select(intents.c.lead_id.label("lead_id"), intents.c.offered_at.label("at")).where(
        intents.c.offered_at >= since, intents.c.seq == 0, intents.c.state != "withdrawn"
    )
    both = sa.union_all(answered, offered).subquery()
    q = sa.select(both.c.lead_id).order_by(both.c.at.desc()).limit(limit)
    async with engine.connect() as conn:
        return list(dict.fromkeys(r.lead_id for r in await conn.execute(q)))


async def past_answer(engine: AsyncEngine, lead_id: str) -> RoutingResult | None:
    """The answer booked under `lead_id`, an answer key (outcome.answer_key)."""
    async with engine.connect() as conn:
        head = (await conn.execute(sa.select(leads).where(leads.c.lead_id == lead_id))).first()
        if head is None:
            offered = (
                await conn.execute(
                    sa.select(intents).where(intents.c.lead_id == lead_id).order_by(intents.c.seq)
                )
            ).all()
            if not offered:
                return None
            booked = (await conn.execute(sa.select(sales).where(sales.c.lead_id == lead_id))).all()
            return answer_from_intents(
                lead_id, [dict(i._mapping) for i in offered], [dict(s._mapping) for s in booked]
            )
        tried = (
            await conn.execute(
                sa.select(attempts).where(attempts.c.lead_id == lead_id).order_by(attempts.c.seq)
            )
        ).all()
        sold = (
            await conn.execute(
                sa.select(sales).where(sales.c.lead_id == lead_id).order_by(sales.c.sold_at, sales.c.buyer_id)
            )
        ).all()
    return rebuild(dict(head._mapping), [dict(a._mapping) for a in tried], [dict(s._mapping) for s in sold])


def rebuild(
    head: Mapping[str, Any], tried: Sequence[Mapping[str, Any]], sold: Sequence[Mapping[str, Any]]
) -> RoutingResult:
    """The answer as the books give it: a post whose outcome was unknown is a sale once
    reconciliation confirmed it (the lead's row says SOLD then), and unsettled until then."""
    unsettled = {s["buyer_id"] for s in sold if s["settlement"] == "unsettled"}
    checks, reason = checks_from(head.get("compliance"))
    return RoutingResult(
        lead_id=head["lead_id"].removeprefix(TEST_KEY_PREFIX),
        flow=head["flow"],
        source_id=head["source_id"],
        test=bool(head["test"]),
        outcome=Outcome(head["outcome"]),
        cost=head["cost"],
        sales=[
            Sale(
                s["buyer_id"],
                s["price"],
                s["buyer_lead_id"],
                bool(s["exclusive"]),
                s["tier"],
                s["cost"],
                s.get("stated_price"),
            )
            for s in sold
            if s["settlement"] == "sold"
        ],
        attempts=[
            Attempt(
                a["buyer_id"],
                a["tier"],
                Status(a["status"]),
                a["bid"],
                a["ping_ms"],
                a["post_ms"],
                a["reason"],
                a["http_status"],
                unsettled=a["status"] == Status.POST_ERROR.value and a["buyer_id"] in unsettled,
                offered=a["offered"],
            )
            for a in tried
        ],
        trace_id=head["trace_id"],
        elapsed_ms=head["elapsed_ms"],
        replayed=True,
        config_version=head["config_version"],
        request_digest=head.get("request_digest") or "",
        lead_type=head.get("lead_type") or "",
        checks=checks,
        reason=reason,
    )
