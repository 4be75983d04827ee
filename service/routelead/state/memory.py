"""Single-process hot state: the embedded default behind the same ports as Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from routelead.domain.identity import fingerprint
from routelead.domain.outcome import RoutingResult
from routelead.domain.periods import period_key
from routelead.state.plan import UNLIMITED, Counter, counters, floor_cents, from_cents, to_cents
from routelead.state.ports import CapLimits, PastAnswers, Period, Reservation, StateMetrics, UnsettledSale
from routelead.state.result_codec import decode, encode


class MemoryCapStore:
    """Exact within one process: reserve checks and increments with no await in between."""

    # How often counters of ended periods are dropped (nothing reads them again).
    SWEEP_S = 60.0

    def __init__(self, metrics: StateMetrics | None = None, journal: Journal | None = None) -> None:
        # f"{buyer}|{counter name}" → (value, wall-clock expiry)
        self._values: dict[str, tuple[int, float]] = {}
        self._balances: dict[str, int] = {}
        self._records: dict[tuple[str, str], _Record] = {}
        self._next_sweep = time.time() + self.SWEEP_S
        self.metrics = metrics if metrics is not None else StateMetrics()
        # In embedded mode: every change is also noted there, to be kept beside the books.
        self.journal = journal

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
        return self._plan_fits(caps, counters(caps, now, cents, scopes, every=False), cents, strict=strict)

    def _plan_fits(self, caps: CapLimits, plan: list[Counter], cents: int, *, strict: bool) -> bool:
        for c in plan:
            if c.limit == UNLIMITED:
                continue  # counted, never full
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
        # Every period's counter, capped or not (see plan.counters).
        plan = counters(caps, now, cents, scopes)
        if not self._plan_fits(caps, plan, cents, strict=False):
            return None
        wall = time.time()
        if wall >= self._next_sweep:
            self._sweep(wall)
        values, journal, prefix = self._values, self.journal, f"{caps.buyer_id}|"
        for c in plan:  # up to 24 counters: kept to plain dict work
            key = prefix + c.name
            found = values.get(key)
            value = (found[0] if found is not None and found[1] >= wall else 0) + c.add
            expires = wall + c.ttl_s
            values[key] = (value, expires)
            if journal is not None:
                journal.value("count", key, value, expires)
        if caps.prepaid:
            self._set_balance(caps.buyer_id, self._balances.get(caps.buyer_id, 0) - cents)
        r = Reservation(
            caps.buyer_id,
            tuple(c.name for c in plan if not c.budget),
            lead_id,
            f"{lead_id}.{uuid.uuid4().hex[:8]}",
            cents,
            tuple(c.name for c in plan if c.budget),
            caps.prepaid,
        )
        record = self._records[(r.buyer_id, r.id)] = _Record(r, wall)
        if self.journal is not None:
            self.journal.reservation(record)
        return r

    def _set(self, key: str, value: int, expires: float) -> None:
        self._values[key] = (value, expires)
        if self.journal is not None:
            self.journal.value("count", key, value, expires)

    def _set_balance(self, buyer_id: str, cents: int) -> None:
        self._balances[buyer_id] = cents
        if self.journal is not None:
            self.journal.value("balance", buyer_id, cents, None)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.SWEEP_S
        for key in [k for k, (_, expires) in self._values.items() if expires < now]:
            del self._values[key]

    def _forget(self, r: Reservation) -> bool:
        """Drop an open reservation; False when it was no longer open."""
        if self._records.pop((r.buyer_id, r.id), None) is None:
            return False
        if self.journal is not None:
            self.journal.reservation_closed(r.buyer_id, r.id)
        return True

    async def commit(self, r: Reservation, outbox: bytes | None = None, cents: int | None = None) -> None:
        # No outbox here: the embedded default writes its ledger directly.
        if not self._forget(r):
            return
        delta = 0 if cents is None else cents - r.cents
        if delta:
            for name in r.budget_keys:
                self._add(f"{r.buyer_id}|{name}", delta)
            if r.prepaid:
                self._set_balance(r.buyer_id, self._balances.get(r.buyer_id, 0) - delta)

    async def release(self, r: Reservation) -> None:
        if not self._forget(r):
            return
        for name in r.keys:
            self._add(f"{r.buyer_id}|{name}", -1)
        for name in r.budget_keys:
            self._add(f"{r.buyer_id}|{name}", -r.cents)
        if r.prepaid:
            self._set_balance(r.buyer_id, self._balances.get(r.buyer_id, 0) + r.cents)

    def _add(self, key: str, delta: int) -> None:
        found = self._values.get(key)
        if found is not None:  # an expired period is not brought back
            self._set(key, max(0, found[0] + delta), found[1])

    async def unsettled(self, r: Reservation, reason: str) -> None:
        record = self._records.get((r.buyer_id, r.id))
        if record is not None:
            record.state, record.reason = "unsettled", reason
            if self.journal is not None:
                self.journal.reservation(record)
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
        if self.journal is not None:
            await self.journal.kept()  # an operator's decision is on disk before it is answered
        return True

    async def top_up(self, buyer_id: str, amount: Decimal) -> Decimal:
        self._set_balance(buyer_id, self._balances.get(buyer_id, 0) + to_cents(amount))
        self.metrics.topped_up()
        if self.journal is not None:
            await self.journal.kept()
        return from_cents(self._balances[buyer_id])

    async def balance(self, buyer_id: str) -> Decimal:
        return from_cents(self._balances.get(buyer_id, 0))

    def count(self, buyer_id: str, name: str) -> int:
        """A counter's value ("n:day:2026-11-22", "usd:…" in cents), for tests and the CLI."""
        return self._get(f"{buyer_id}|{name}")

    def restore(
        self,
        counts: Iterable[tuple[str, int, float]],
        balances: Iterable[tuple[str, int]],
        records: Iterable[tuple[Reservation, float, str, str]],
    ) -> None:
        """Take back what an earlier process kept (before any lead is routed)."""
        now = time.time()
        self._values.update((k, (v, exp)) for k, v, exp in counts if exp > now)
        self._balances.update(balances)
        for r, at, state, reason in records:
            self._records[(r.buyer_id, r.id)] = _Record(r, at, state, reason)


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
        clock: Callable[[], float] = time.time,
        secret: bytes | None = None,
        journal: Journal | None = None,
    ) -> None:
        # key → expiry on `clock` (wall-clock seconds by default, so they can be kept on disk)
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._max = max_keys
        self._clock = clock
        # Without a configured secret a random one will do for this process alone; the embedded
        # books hand over the one they keep, so that fingerprints match across a restart.
        self._secret = secret or secrets.token_bytes(32)
        self.journal = journal

    def restore(self, keys: Iterable[tuple[str, float]]) -> None:
        """Take back the keys an earlier process kept, oldest expiry first."""
        now = self._clock()
        for key, expiry in keys:
            if expiry > now:
                self._expiry[key] = expiry
                self._expiry.move_to_end(key)
        while len(self._expiry) > self._max:
            self._expiry.popitem(last=False)

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
            if self.journal is not None:
                self.journal.dedupe(key, now + ttl_s)
            while len(self._expiry) > self._max:
                dropped, _ = self._expiry.popitem(last=False)
                if self.journal is not None:
                    self.journal.dedupe(dropped, None)
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

    async def backed_by(self, books: PastAnswers) -> None:
        """Memory forgets at every restart; the books remember what was answered before it."""
        self.recall(await books.recent(), books.answer)

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

    def __init__(self, journal: Journal | None = None) -> None:
        self._turns: dict[str, int] = {}
        self.journal = journal

    async def next_turn(self, key: str) -> int:
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        if self.journal is not None:
            self.journal.value("turn", key, turn + 1, None)
        return turn

    def restore(self, turns: Iterable[tuple[str, int]]) -> None:
        self._turns.update(turns)


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


class SeededBuyerStats(MemoryBuyerStats):
    """accept_rate = (accepted in the books + accepted here since the last seed + prior) /
    (posts in the books + posts here since the last seed + prior); seeded by records/buyer_stats.py."""

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


ValueKind = Literal["count", "balance", "turn"]
# An open reservation as it stood when noted: the reservation, when it was made, state, reason.
ReservationRow = tuple[Reservation, float, str, str]


@dataclass(slots=True)
class Changes:
    """The controls' changes taken out of a Journal for one write; None marks a deletion."""

    values: dict[tuple[ValueKind, str], tuple[int, float | None]]
    dedupe: dict[str, float | None]
    reservations: dict[tuple[str, str], ReservationRow | None]

    def __bool__(self) -> bool:
        return bool(self.values or self.dedupe or self.reservations)


class Journal:
    """What changed in the memory controls since they were last written, by key, the newest value
    winning: the embedded books keep it (records/controls.py). Noting a change is a dict write on
    the event loop; the disk write happens elsewhere (the ledger's writer), never here."""

    def __init__(self, keep: Callable[[], Awaitable[None]] | None = None) -> None:
        self._changes = Changes({}, {}, {})
        # The books' write: returns once every change noted so far is on disk.
        self.keep = keep

    def value(self, kind: ValueKind, key: str, value: int, expires: float | None) -> None:
        self._changes.values[(kind, key)] = (value, expires)

    def dedupe(self, key: str, expires: float | None) -> None:
        self._changes.dedupe[key] = expires

    def reservation(self, record: _Record) -> None:
        r = record.r
        self._changes.reservations[(r.buyer_id, r.id)] = (r, record.at, record.state, record.reason)

    def reservation_closed(self, buyer_id: str, reservation_id: str) -> None:
        self._changes.reservations[(buyer_id, reservation_id)] = None

    def take(self) -> Changes:
        taken, self._changes = self._changes, Changes({}, {}, {})
        return taken

    def put_back(self, taken: Changes) -> None:
        """A write failed: its changes wait for the next one, under any made since."""
        for vk, v in taken.values.items():
            self._changes.values.setdefault(vk, v)
        for dk, d in taken.dedupe.items():
            self._changes.dedupe.setdefault(dk, d)
        for rk, r in taken.reservations.items():
            self._changes.reservations.setdefault(rk, r)

    def __bool__(self) -> bool:
        return bool(self._changes)

    async def kept(self) -> None:
        if self.keep is not None:
            await self.keep()


class MemorySuppressionStore:
    """Suppression lists in this process: 16-byte digests in one set per (list, buyer). With
    `keep` (records/controls.py), a change is on disk before it is applied and answered."""

    def __init__(
        self, keep: Callable[[str, str, Sequence[str], bool], Awaitable[None]] | None = None
    ) -> None:
        self._lists: dict[tuple[str, str], set[bytes]] = {}
        self.keep = keep

    def restore(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Entries kept by an earlier process: (list, buyer, hex digest)."""
        for name, buyer, d in rows:
            self._lists.setdefault((name, buyer), set()).add(bytes.fromhex(d))

    async def change(self, name: str, buyer: str, digests: Sequence[str], *, add: bool) -> int:
        if self.keep is not None:
            await self.keep(name, buyer, digests, add)
        entries = self._lists.setdefault((name, buyer), set())
        before = len(entries)
        raw = [bytes.fromhex(d) for d in digests]
        if add:
            entries.update(raw)
        else:
            entries.difference_update(raw)
        return abs(len(entries) - before)

    async def hits(self, digests: Sequence[str]) -> list[tuple[str, str]]:
        raw = [bytes.fromhex(d) for d in digests]
        return [key for key, entries in self._lists.items() if any(d in entries for d in raw)]

    async def sizes(self) -> dict[tuple[str, str], int]:
        return {key: len(entries) for key, entries in self._lists.items()}
