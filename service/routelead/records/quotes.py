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


_BUILT: dict[str, tuple[Any, Any]] = {}


def write(conn: sa.Connection, records: Sequence[QuoteRecord], outcomes: Sequence[QuoteOutcome]) -> None:
    """New quotes first (a commit may share their transaction), then the outcomes: only an
    offered quote changes state, so a repeated outcome changes nothing."""
    dialect = conn.dialect.name
    if (built := _BUILT.get(dialect)) is None:
        # Built once per dialect: building a statement cost more CPU than running it.
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(quotes)
        update = (
            sa.update(quotes)
            .where(quotes.c.quote_id == sa.bindparam("q_id"), quotes.c.state == "offered")
            .values(state=sa.bindparam("q_state"), committed_at=sa.bindparam("q_at"))
        )
        built = _BUILT[dialect] = (insert.on_conflict_do_nothing(), update)
    if records:
        conn.execute(
            built[0],
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
    if outcomes:
        rows = [{"q_id": o.quote_id, "q_state": o.state, "q_at": _at(o.at)} for o in outcomes]
        conn.execute(built[1], rows)


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
