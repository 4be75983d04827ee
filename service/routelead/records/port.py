"""What the router needs from the books: one awaited write per lead, before it answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from routelead.domain.outcome import RoutingResult


class BooksUnavailable(RuntimeError):
    """The books refuse writes: nothing was routed (gRPC UNAVAILABLE; retry later)."""


class Unbooked(BooksUnavailable):
    """The lead was routed but its record is not written yet. It is held and retried; a retry with
    the same lead_id gets the lead's answer once it is booked, and never routes it again."""


class LedgerWriter(Protocol):
    async def record(
        self,
        result: RoutingResult,
        ping_fields: Mapping[str, str],
        received_at: float,
        config_version: str,
    ) -> None:
        """Durably keep the lead (SQLite write, or an outbox append); raise if it could not."""
