"""Single-process hot state: the embedded default behind the same ports as Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from decimal import Decimal

from routelead.domain.outcome import RoutingResult
from routelead.state.periods import period_key
from routelead.state.ports import CapLimits, Period, Reservation


class MemoryCapStore:
    """Exact within one process: reserve checks and increments with no await in between."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self.open_unsettled: dict[str, tuple[Reservation, str]] = {}

    def _keys(self, caps: CapLimits, now: float) -> list[tuple[str, int]]:
        return [(f"{caps.buyer_id}|{period_key(p, now, caps.timezone)}", limit) for p, limit in caps.limits]

    def has_room(self, caps: CapLimits, now: float) -> bool:
        return all(self._counts.get(key, 0) < limit for key, limit in self._keys(caps, now))

    async def reserve(self, caps: CapLimits, lead_id: str, now: float) -> Reservation | None:
        keys = self._keys(caps, now)
        if any(self._counts.get(key, 0) >= limit for key, limit in keys):
            return None
        for key, _ in keys:
            self._counts[key] = self._counts.get(key, 0) + 1
        return Reservation(caps.buyer_id, tuple(k for k, _ in keys), lead_id)

    async def commit(self, r: Reservation) -> None:
        self.open_unsettled.pop(r.lead_id + r.buyer_id, None)

    async def release(self, r: Reservation) -> None:
        for key in r.keys:
            self._counts[key] = max(0, self._counts.get(key, 0) - 1)

    async def unsettled(self, r: Reservation, reason: str) -> None:
        self.open_unsettled[r.lead_id + r.buyer_id] = (r, reason)

    def count(self, buyer_id: str, period_key_: str) -> int:
        return self._counts.get(f"{buyer_id}|{period_key_}", 0)


class MemoryDedupeStore:
    """Keys with expiry, bounded in size so a flood of unique leads cannot grow it forever."""

    def __init__(self, max_keys: int = 1_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._max = max_keys
        self._clock = clock

    async def seen_or_add(self, key: str, ttl_s: float, *, add: bool) -> bool:
        now = self._clock()
        expiry = self._expiry.get(key)
        if expiry is not None and expiry > now:
            return True
        if add:
            self._expiry[key] = now + ttl_s
            self._expiry.move_to_end(key)
            while len(self._expiry) > self._max:
                self._expiry.popitem(last=False)
        return False


class MemoryIdempotencyStore:
    """Remembers recent answers by lead_id; concurrent repeats wait for the first one."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._done: OrderedDict[str, RoutingResult] = OrderedDict()
        self._running: dict[str, asyncio.Future[RoutingResult]] = {}
        self._max = max_entries

    async def once(self, lead_id: str, work: Callable[[], Awaitable[RoutingResult]]) -> RoutingResult:
        if (done := self._done.get(lead_id)) is not None:
            return dataclasses.replace(done, replayed=True)
        if (running := self._running.get(lead_id)) is not None:
            return dataclasses.replace(await asyncio.shield(running), replayed=True)
        future: asyncio.Future[RoutingResult] = asyncio.get_running_loop().create_future()
        self._running[lead_id] = future
        try:
            result = await work()
        except BaseException as exc:
            # A failure is not remembered: the caller may retry the same lead_id.
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved here, so an unawaited failure logs no warning
            raise
        finally:
            self._running.pop(lead_id, None)
        future.set_result(result)
        self._done[lead_id] = result
        while len(self._done) > self._max:
            self._done.popitem(last=False)
        return result


class MemoryRotationStore:
    """Per-process turn counters; the Redis store shares them across processes."""

    def __init__(self) -> None:
        self._turns: dict[str, int] = {}

    async def next_turn(self, key: str) -> int:
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        return turn


class MemoryBuyerStats:
    """Post-accept rates from this process's own posts, with a Beta prior of 9 in 10 accepted.

    The prior keeps one early rejection from sinking a new buyer; after a few dozen posts the
    measured rate dominates.
    """

    PRIOR_ACCEPTED = 9
    PRIOR_POSTS = 10

    def __init__(self) -> None:
        self._posts: dict[str, tuple[int, int]] = {}

    def accept_rate(self, buyer_id: str) -> Decimal:
        accepted, posted = self._posts.get(buyer_id, (0, 0))
        return Decimal(accepted + self.PRIOR_ACCEPTED) / Decimal(posted + self.PRIOR_POSTS)

    def record_post(self, buyer_id: str, accepted: bool) -> None:
        a, n = self._posts.get(buyer_id, (0, 0))
        self._posts[buyer_id] = (a + accepted, n + 1)


class MemoryVolumeStore:
    """Per-process volume counters for the current UTC periods; older periods are dropped."""

    PERIODS: tuple[Period, ...] = ("hour", "day", "week", "month")

    def __init__(self) -> None:
        self._counts: dict[tuple[str, Period], tuple[str, int]] = {}

    def counts(self, subject: str, now: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.PERIODS:
            key, n = self._counts.get((subject, p), ("", 0))
            out[p] = n if key == period_key(p, now, "UTC") else 0
        return out

    async def add(self, subject: str, now: float) -> None:
        for p in self.PERIODS:
            current = period_key(p, now, "UTC")
            key, n = self._counts.get((subject, p), ("", 0))
            self._counts[(subject, p)] = (current, n + 1 if key == current else 1)
