"""What the router needs from the books: one awaited write per lead, before it answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

# The books' answers to a router, shared with the hot state (domain/books.py).
from routelead.domain.books import AlreadyOffered as AlreadyOffered
from routelead.domain.books import BooksUnavailable as BooksUnavailable
from routelead.domain.books import Unbooked as Unbooked
from routelead.domain.outcome import RoutingResult

if TYPE_CHECKING:
    from routelead.records.intents import Intent
    from routelead.records.quotes import BookedQuote, QuoteOutcome, QuoteRecord


class LedgerWriter(Protocol):
    async def record(
        self,
        result: RoutingResult,
        ping_fields: Mapping[str, str],
        received_at: float,
        config_version: str,
    ) -> bool | None:
        """Durably keep the lead (SQLite write, or an outbox append); raise if it could not.
        False: the books already answer this lead_id (answered or offered elsewhere), and that
        answer is the answer; True or None: kept."""


@runtime_checkable
class IntentWriter(Protocol):
    """Books that decide whether a lead was offered (`records/intents.py`)."""

    async def offer(self, intent: Intent) -> bool:
        """Commit the intent before its post leaves; False: the lead is taken, do not post."""

    def withdraw(self, lead_id: str, seq: int) -> None:
        """The intent's commit was not awaited to the end: its post never left."""

    async def answer(self, lead_id: str) -> RoutingResult | None:
        """What the books say about a lead_id (None: nothing)."""


@runtime_checkable
class QuoteWriter(Protocol):
    """Books that record inbound quotes (`records/quotes.py`)."""

    async def quote(self, item: QuoteRecord | QuoteOutcome) -> None:
        """Keep a quote, or what became of it."""

    async def find_quote(self, quote_id: str) -> BookedQuote | None:
        """A quote the books hold (None: unknown)."""
