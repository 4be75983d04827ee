"""Inbound quotes in the books: every quote and what became of it, for supplier stats.

Written through the ledger's group-committed writer (one transaction with whatever else is
queued): a quote when it is answered (`QuoteRecord`), its end when a commit decides it
(`QuoteOutcome`). A quote nobody commits stays `offered` and counts as expired once past its
expiry: no sweeper has to visit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from routelead.records.schema import quotes

QuoteState = Literal["offered", "no_offer", "won", "lost", "expired"]


@dataclass(frozen=True, slots=True)
class QuoteRecord:
    quote_id: str
    source_id: str
    flow: str
    config_version: str
    quoted_at: float
    expires_at: float
    state: QuoteState
    price: Decimal | None
    revenue: Decimal | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class QuoteOutcome:
    """A commit decided an offered quote: won (sold), lost (not sold) or expired (too late)."""

    quote_id: str
    state: QuoteState
    at: float


@dataclass(frozen=True, slots=True)
class BookedQuote:
    quote_id: str
    source_id: str
    state: str
    expires_at: datetime


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def write(conn: sa.Connection, records: Sequence[QuoteRecord], outcomes: Sequence[QuoteOutcome]) -> None:
    """New quotes first (a commit may share their transaction), then the outcomes: only an
    offered quote changes state, so a repeated outcome changes nothing."""
    if records:
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(quotes)
        conn.execute(
            insert.on_conflict_do_nothing(),
            [
                {
                    "quote_id": r.quote_id,
                    "source_id": r.source_id,
                    "flow": r.flow,
                    "config_version": r.config_version,
                    "quoted_at": _at(r.quoted_at),
                    "expires_at": _at(r.expires_at),
                    "state": r.state,
                    "price": r.price,
                    "revenue": r.revenue,
                    "reason": r.reason[:500],
                }
                for r in records
            ],
        )
    for o in outcomes:
        conn.execute(
            sa.update(quotes)
            .where(quotes.c.quote_id == o.quote_id, quotes.c.state == "offered")
            .values(state=o.state, committed_at=_at(o.at))
        )


def find(conn: sa.Connection, quote_id: str) -> BookedQuote | None:
    row = conn.execute(
        sa.select(quotes.c.quote_id, quotes.c.source_id, quotes.c.state, quotes.c.expires_at).where(
            quotes.c.quote_id == quote_id
        )
    ).first()
    if row is None:
        return None
    expires: Any = row.expires_at
    if expires.tzinfo is None:  # SQLite gives UTC back naive
        expires = expires.replace(tzinfo=UTC)
    return BookedQuote(str(row.quote_id), str(row.source_id), str(row.state), expires)
