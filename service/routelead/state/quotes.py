"""Inbound quotes in the hot state: the quotes themselves (so a commit can land on any replica)
and each source's quote limits. The ports, the limit rule, and the single-process adapters; the
Redis ones are in redis/quotes.py."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from routelead.domain.quote import QuoteLimits

LimitName = Literal["per_second", "per_day", "max_ping_post_ratio"]
# Day counters outlive their UTC day a little (clocks of replicas differ), then are dropped.
DAY_KEEP_S = 2 * 86400


@dataclass(frozen=True, slots=True)
class Refusal:
    """A quote refused by a limit: which one, and when a retry can succeed."""

    limit: LimitName
    retry_after_s: float
    detail: str


class QuoteStore(Protocol):
    async def put(self, quote_id: str, data: bytes, keep_s: float) -> None:
        """Keep a quote for `keep_s` seconds (past its expiry, to tell "expired" from "unknown")."""

    async def get(self, quote_id: str) -> bytes | None:
        """The quote, or None when unknown (or dropped long after its expiry)."""

    async def mark_committed(self, quote_id: str, keep_s: float) -> None:
        """A commit of this quote started (a repeat after its expiry is answered from it)."""

    async def committed(self, quote_id: str) -> bool:
        """Whether a commit of this quote ever started."""


class QuoteLimiter(Protocol):
    async def admit(self, source_id: str, limits: QuoteLimits, now: float) -> Refusal | None:
        """Count one quote of `source_id` unless a limit refuses it (then nothing is counted)."""

    async def posted(self, source_id: str, now: float) -> None:
        """Count one commit (a post of a full lead) for the ping:post ratio."""


def day_key(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def refusal(limits: QuoteLimits, second: int, day_pings: int, day_posts: int, now: float) -> Refusal | None:
    """The limit rule, shared by both adapters (the Redis one runs it in a script): one more quote
    this second, this UTC day, and within `max_ping_post_ratio` quotes per commit today (the
    first `max_ping_post_ratio` quotes of a day need no commit)."""
    if limits.per_second is not None and second + 1 > limits.per_second:
        return Refusal(
            "per_second",
            max(0.001, math.floor(now) + 1 - now),
            f"{limits.per_second} quotes per second reached",
        )
    to_midnight = _to_midnight(now)
    if limits.per_day is not None and day_pings + 1 > limits.per_day:
        return Refusal("per_day", to_midnight, f"{limits.per_day} quotes per day (UTC) reached")
    ratio = limits.max_ping_post_ratio
    if ratio is not None and day_pings + 1 > ratio * max(day_posts, 1):
        return Refusal(
            "max_ping_post_ratio",
            to_midnight,
            f"ping:post ratio {ratio}:1 reached ({day_pings} quotes, {day_posts} commits today, UTC); "
            "commit quoted leads, or wait for the next day",
        )
    return None


def _to_midnight(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(0.001, (day + timedelta(days=1)).timestamp() - now)


class MemoryQuoteStore:
    """Quotes of this process only, bounded in number; expired ones are dropped as new come."""

    def __init__(self, max_quotes: int = 200_000, clock: Callable[[], float] = time.time) -> None:
        self._quotes: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._committed: dict[str, float] = {}
        self._max = max_quotes
        self._clock = clock

    async def put(self, quote_id: str, data: bytes, keep_s: float) -> None:
        now = self._clock()
        self._quotes[quote_id] = (data, now + keep_s)
        self._quotes.move_to_end(quote_id)
        # Kept in insertion order with one ttl per source: the oldest expire first.
        while self._quotes:
            first, (_, until) = next(iter(self._quotes.items()))
            if until > now and len(self._quotes) <= self._max:
                break
            del self._quotes[first]
            self._committed.pop(first, None)

    async def get(self, quote_id: str) -> bytes | None:
        found = self._quotes.get(quote_id)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    async def mark_committed(self, quote_id: str, keep_s: float) -> None:
        self._committed[quote_id] = self._clock() + keep_s

    async def committed(self, quote_id: str) -> bool:
        return self._committed.get(quote_id, 0.0) > self._clock()


class MemoryQuoteLimiter:
    """Exact within one process; the Redis limiter counts for every replica."""

    def __init__(self) -> None:
        self._seconds: dict[str, tuple[int, int]] = {}
        # (source, "pings" | "posts") → (UTC day, count)
        self._days: dict[tuple[str, str], tuple[str, int]] = {}

    def _day(self, source_id: str, what: str, day: str) -> int:
        found = self._days.get((source_id, what))
        return found[1] if found is not None and found[0] == day else 0

    async def admit(self, source_id: str, limits: QuoteLimits, now: float) -> Refusal | None:
        sec, day = math.floor(now), day_key(now)
        got = self._seconds.get(source_id)
        second = got[1] if got is not None and got[0] == sec else 0
        pings, posts = self._day(source_id, "pings", day), self._day(source_id, "posts", day)
        refused = refusal(limits, second, pings, posts, now)
        if refused is None:
            self._seconds[source_id] = (sec, second + 1)
            self._days[(source_id, "pings")] = (day, pings + 1)
        return refused

    async def posted(self, source_id: str, now: float) -> None:
        day = day_key(now)
        self._days[(source_id, "posts")] = (day, self._day(source_id, "posts", day) + 1)
