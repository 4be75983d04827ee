"""The ranking's post-accept rates, seeded from the books and refreshed, plus this process's posts.

Every worker process refreshes its own copy from the ledger (one small GROUP BY per minute): the
rate the expected-revenue ranking uses then reflects every replica's posts, not only its own.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from routelead.records.reports import Reports

log = structlog.get_logger("routelead.buyer_stats")
# How far back the books are read, and how often.
DEFAULT_LOOKBACK = timedelta(days=7)
DEFAULT_EVERY_S = 60.0


class Seeded(Protocol):
    """The ranking's rates (state/memory.py SeededBuyerStats): the books' counts replace its base."""

    def seed(self, counts: dict[str, tuple[int, int]]) -> None: ...


async def refresh(stats: Seeded, reports: Reports, lookback: timedelta = DEFAULT_LOOKBACK) -> None:
    stats.seed(await reports.post_accept_rates(datetime.now(UTC) - lookback))


async def keep_fresh(
    stats: Seeded,
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
