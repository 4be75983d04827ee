"""Single-process hot state: the embedded default behind the same ports as Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from routelead.domain.identity import fingerprint
from routelead.domain.outcome import RoutingResult
from routelead.state.periods import period_key
from routelead.state.plan import counters, floor_cents, from_cents, to_cents
from routelead.state.ports import CapLimits, Period, Reservation, StateMetrics, UnsettledSale
from routelead.state.result_codec import decode, encode


class MemoryCapStore:
    """Exact within one process: reserve checks and increments with no await in between."""

    def __init__(self) -> None:
        # f"{buyer}|{counter name}" → (value, wall-clock expiry)
        self._values: dict[str, tuple[int, float]] = {}
        self._balances: dict[str, int] = {}
        self._records: dict[tuple[str, str], _Record] = {}
        self.metrics = StateMetrics()

    @property
    def healthy(self) -> bool:
        return True

    def _get(self, key: str) -> int:
        found = self._values.get(key)
        if found is None:
            return 0
        if found[1] < time.time():
            del self._values[key]
            return 0
        return found[0]

    def has_room(
        self, caps: CapLimits, now: float, price: Decimal | None = None, scopes: tuple[str, ...] = ()
    ) -> bool:
        cents = to_cents(price) if price is not None else 0
        return self._fits(caps, now, cents, scopes, strict=price is None)

    def _fits(
        self, caps: CapLimits, now: float, cents: int, scopes: tuple[str, ...], *, strict: bool
    ) -> bool:
        for c in counters(caps, now, cents, scopes):
            value = self._get(f"{caps.buyer_id}|{c.name}")
            # With the price unknown, a budget that is exactly spent is full; otherwise price must fit.
            if value + c.add > c.limit or (strict and value >= c.limit):
                return False
        if caps.prepaid:
            left = self._balances.get(caps.buyer_id, 0) - cents
            if left < floor_cents(caps) or (strict and left <= floor_cents(caps)):
                return False
        return True

    async def reserve(
        self,
        caps: CapLimits,
        lead_id: str,
        now: float,
        price: Decimal = Decimal("0"),
        scopes: tuple[str, ...] = (),
    ) -> Reservation | None:
        cents = to_cents(price)
        if not self._fits(caps, now, cents, scopes, strict=False):
            return None
        plan = counters(caps, now, cents, scopes)
        for c in plan:
            key = f"{caps.buyer_id}|{c.name}"
            self._values[key] = (self._get(key) + c.add, time.time() + c.ttl_s)
        if caps.prepaid:
            self._balances[caps.buyer_id] = self._balances.get(caps.buyer_id, 0) - cents
        r = Reservation(
            caps.buyer_id,
            tuple(c.name for c in plan if not c.budget),
            lead_id,
            f"{lead_id}.{uuid.uuid4().hex[:8]}",
            cents,
            tuple(c.name for c in plan if c.budget),
            caps.prepaid,
        )
        self._records[(r.buyer_id, r.id)] = _Record(r, time.time())
        return r

    async def commit(self, r: Reservation, outbox: bytes | None = None, cents: int | None = None) -> None:
        # No outbox here: the embedded default writes its ledger directly.
        if self._records.pop((r.buyer_id, r.id), None) is None:
            return
        delta = 0 if cents is None else cents - r.cents
        if delta:
            for name in r.budget_keys:
                self._add(f"{r.buyer_id}|{name}", delta)
            if r.prepaid:
                self._balances[r.buyer_id] = self._balances.get(r.buyer_id, 0) - delta

    async def release(self, r: Reservation) -> None:
        if self._records.pop((r.buyer_id, r.id), None) is None:
            return
        for name in r.keys:
            self._add(f"{r.buyer_id}|{name}", -1)
        for name in r.budget_keys:
            self._add(f"{r.buyer_id}|{name}", -r.cents)
        if r.prepaid:
            self._balances[r.buyer_id] = self._balances.get(r.buyer_id, 0) + r.cents

    def _add(self, key: str, delta: int) -> None:
        found = self._values.get(key)
        if found is not None:  # an expired period is not brought back
            self._values[key] = (max(0, found[0] + delta), found[1])

    async def unsettled(self, r: Reservation, reason: str) -> None:
        record = self._records.get((r.buyer_id, r.id))
        if record is not None:
            record.state, record.reason = "unsettled", reason
            self.metrics.marked()

    async def list_unsettled(self, older_than_s: float = 30.0) -> list[UnsettledSale]:
        cutoff = time.time() - older_than_s
        return [
            UnsettledSale(
                rec.r.buyer_id,
                rec.r.id,
                rec.r.lead_id,
                from_cents(rec.r.cents),
                rec.at,
                "unsettled" if rec.state == "unsettled" else "orphaned",
                rec.reason or "reserved and never settled",
            )
            for rec in self._records.values()
            if rec.state == "unsettled" or rec.at <= cutoff
        ]

    async def settle(
        self, buyer_id: str, reservation_id: str, *, accepted: bool, outbox: bytes | None = None
    ) -> bool:
        record = self._records.get((buyer_id, reservation_id))
        if record is None:
            return False
        if accepted:
            await self.commit(record.r, outbox)
            self.metrics.confirmed()
        else:
            await self.release(record.r)
            self.metrics.freed()
        return True

    async def top_up(self, buyer_id: str, amount: Decimal) -> Decimal:
        self._balances[buyer_id] = self._balances.get(buyer_id, 0) + to_cents(amount)
        self.metrics.topped_up()
        return from_cents(self._balances[buyer_id])

    async def balance(self, buyer_id: str) -> Decimal:
        return from_cents(self._balances.get(buyer_id, 0))

    def count(self, buyer_id: str, name: str) -> int:
        """A counter's value ("n:day:2026-11-22", "usd:…" in cents), for tests and the CLI."""
        return self._get(f"{buyer_id}|{name}")


@dataclass(slots=True)
class _Record:
    r: Reservation
    at: float
    state: str = "reserved"
    reason: str = ""


class MemoryDedupeStore:
    """Keys with expiry, bounded in size so a flood of unique leads cannot grow it forever."""

    def __init__(
        self,
        max_keys: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
        secret: bytes | None = None,
    ) -> None:
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._max = max_keys
        self._clock = clock
        # One process only: without a configured secret a random one is as good as any.
        self._secret = secret or secrets.token_bytes(32)

    def fingerprint(self, values: list[str]) -> str:
        return fingerprint(self._secret, values)

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
    """Remembers recent answers by lead_id; concurrent repeats wait for the first one.

    Answers are kept serialized, copied to their exact size: orjson hands back ~8 KB buffers
    whatever the length, so kept as returned a ten-attempt answer took 8.2 KB, more than its
    live objects; copied, 2.5 KB (tracemalloc)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._done: OrderedDict[str, bytes] = OrderedDict()
        self._running: dict[str, asyncio.Future[RoutingResult]] = {}
        self._max = max_entries
        # Answered before this process started (from the books): rebuilt on a retry, not re-routed.
        self._earlier: set[str] = set()
        self._load: Callable[[str], Awaitable[RoutingResult | None]] | None = None

    def recall(self, lead_ids: Iterable[str], load: Callable[[str], Awaitable[RoutingResult | None]]) -> None:
        """Lead_ids answered by an earlier process, and how to rebuild one of their answers."""
        self._earlier = set(lead_ids)
        self._load = load

    async def once(self, lead_id: str, work: Callable[[], Awaitable[RoutingResult]]) -> RoutingResult:
        if (done := self._done.get(lead_id)) is not None:
            found = decode(done)
            # A post of unknown outcome may have been settled since: the books say how.
            unsettled = self._load is not None and any(a.unsettled for a in found.attempts)
            if unsettled and self._load is not None and (fresh := await self._load(lead_id)) is not None:
                found = fresh
                await self.remember(fresh)
            return dataclasses.replace(found, replayed=True)
        if lead_id in self._earlier and self._load is not None:
            earlier = await self._load(lead_id)
            if earlier is not None:
                await self.remember(earlier)
                return dataclasses.replace(earlier, replayed=True)
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
        await self.remember(result)
        return result

    async def remember(self, result: RoutingResult) -> None:
        key = result.key  # a test call's answer has a slot of its own
        self._done[key] = memoryview(encode(result)).tobytes()
        self._done.move_to_end(key)
        while len(self._done) > self._max:
            self._done.popitem(last=False)


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

    async def counts(self, subject: str, now: float) -> dict[str, int]:
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
