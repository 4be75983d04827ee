"""The ranking's post-accept rates, seeded from the books and refreshed, plus this process's posts.

Every worker process refreshes its own copy from the ledger (one small GROUP BY per minute): the
rate the expected-revenue ranking uses then reflects every replica's posts, not only its own.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import structlog

from routelead.records.reports import Reports
from routelead.state.memory import MemoryBuyerStats

log = structlog.get_logger("routelead.buyer_stats")
# How far back the books are read, and how often.
DEFAULT_LOOKBACK = timedelta(days=7)
DEFAULT_EVERY_S = 60.0


class LedgerBuyerStats(MemoryBuyerStats):
    """accept_rate = (accepted in the books + accepted here since the last refresh + prior) /
    (posts in the books + posts here since the last refresh + prior)."""

    def __init__(self) -> None:
        super().__init__()
        self._base: dict[str, tuple[int, int]] = {}

    def seed(self, counts: dict[str, tuple[int, int]]) -> None:
        # This process's posts up to now are in the books already (written before each answer).
        self._base = dict(counts)
        self._posts.clear()

    def accept_rate(self, buyer_id: str) -> Decimal:
        base_a, base_n = self._base.get(buyer_id, (0, 0))
        a, n = self._posts.get(buyer_id, (0, 0))
        return Decimal(base_a + a + self.PRIOR_ACCEPTED) / Decimal(base_n + n + self.PRIOR_POSTS)


async def refresh(stats: LedgerBuyerStats, reports: Reports, lookback: timedelta = DEFAULT_LOOKBACK) -> None:
    stats.seed(await reports.post_accept_rates(datetime.now(UTC) - lookback))


async def keep_fresh(
    stats: LedgerBuyerStats,
    reports: Reports,
    stop: asyncio.Event,
    every_s: float = DEFAULT_EVERY_S,
    lookback: timedelta = DEFAULT_LOOKBACK,
) -> None:
    """After the start-up `refresh`: refresh every `every_s` until `stop`. A failed read keeps the
    last rates (the books may be briefly away) and is logged, never raised into the server."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), every_s)
            return
        except TimeoutError:
            pass
        try:
            await refresh(stats, reports, lookback)
        except Exception as exc:
            log.warning("buyer_stats.refresh_failed", error=type(exc).__name__, detail=str(exc)[:200])
