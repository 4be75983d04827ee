"""The hot-state ports the router depends on; memory adapters in memory.py, Redis ones in redis/."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

# The cap values live below every adapter (domain/caps.py), shared with config and telemetry.
from routelead.domain.caps import PERIODS as PERIODS
from routelead.domain.caps import CapLimits as CapLimits
from routelead.domain.caps import Period as Period
from routelead.domain.caps import Reservation as Reservation
from routelead.domain.caps import UnsettledSale as UnsettledSale
from routelead.domain.outcome import RoutingResult

# The monotonic instant by which the current lead must be answered: every hot-state call made
# on its behalf is bounded by it (set by the router, read by the Redis adapters).
lead_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("lead_deadline", default=None)


def remaining_s() -> float | None:
    deadline = lead_deadline.get()
    return None if deadline is None else deadline - time.monotonic()


class StateUnavailable(RuntimeError):
    """The shared state could not be reached in time; the caller applies the Redis-down policy."""


class StateCounters(Protocol):
    """Where hot-state events are counted besides StateMetrics' own fields: the composition root
    injects the Prometheus one (telemetry/metrics.py); nothing is exported by default."""

    def marked(self) -> None: ...
    def settled(self, how: str, n: int) -> None: ...
    def topped_up(self) -> None: ...
    def error(self) -> None: ...
    def fallback(self, what: str) -> None: ...


class NoStateCounters:
    """Counts nothing beyond StateMetrics' fields (a store built outside the served process)."""

    def marked(self) -> None:
        pass

    def settled(self, how: str, n: int) -> None:
        pass

    def topped_up(self) -> None:
        pass

    def error(self) -> None:
        pass

    def fallback(self, what: str) -> None:
        pass


@dataclass(slots=True)
class StateMetrics:
    """Hot-state counters: kept here for tests and the CLI, and written through to `export`."""

    unsettled_marked_total: int = 0
    settled_confirmed_total: int = 0
    settled_freed_total: int = 0
    balance_topups_total: int = 0
    redis_errors_total: int = 0
    redis_fallbacks_total: dict[str, int] = field(default_factory=dict)
    export: StateCounters = field(default_factory=NoStateCounters, repr=False, compare=False)

    def marked(self) -> None:
        self.unsettled_marked_total += 1
        self.export.marked()

    def confirmed(self, n: int = 1) -> None:
        self.settled_confirmed_total += n
        self.export.settled("confirmed", n)

    def freed(self, n: int = 1) -> None:
        self.settled_freed_total += n
        self.export.settled("freed", n)

    def topped_up(self) -> None:
        self.balance_topups_total += 1
        self.export.topped_up()

    def error(self) -> None:
        self.redis_errors_total += 1
        self.export.error()

    def fallback(self, what: str) -> None:
        self.redis_fallbacks_total[what] = self.redis_fallbacks_total.get(what, 0) + 1
        self.export.fallback(what)


class CapStore(Protocol):
    metrics: StateMetrics

    @property
    def healthy(self) -> bool:
        """False while the authoritative counters cannot be reached."""

    def has_room(
        self, caps: CapLimits, now: float, price: Decimal | None = None, scopes: tuple[str, ...] = ()
    ) -> bool:
        """Fast, possibly stale check, so a full buyer is not pinged (price: when already known;
        scopes: the lead's flow and source, "flow=solar", "source=aff")."""

    async def reserve(
        self,
        caps: CapLimits,
        lead_id: str,
        now: float,
        price: Decimal = Decimal("0"),
        scopes: tuple[str, ...] = (),
    ) -> Reservation | None:
        """Atomically count one lead (and its price) against every period and the balance, or None
        when any is full; raises StateUnavailable when the counters cannot be reached in time."""

    async def commit(self, r: Reservation, outbox: bytes | None = None, cents: int | None = None) -> None:
        """The buyer accepted: the reservation is a sale (`outbox`: the ledger record, written
        atomically with the commit by stores that keep an outbox). `cents`: the price the buyer's
        post answer states, when not the reserved one; budgets and the balance count that."""

    async def release(self, r: Reservation) -> None:
        """The buyer provably did not take the lead: give the slot back."""

    async def unsettled(self, r: Reservation, reason: str) -> None:
        """Outcome unknown: the slot stays counted until someone settles it."""

    async def list_unsettled(self, older_than_s: float = 0.0) -> list[UnsettledSale]:
        """Unsettled reservations, and reservations left behind by a process that died
        (reserved longer than `older_than_s` ago and never settled)."""

    async def settle(
        self, buyer_id: str, reservation_id: str, *, accepted: bool, outbox: bytes | None = None
    ) -> bool:
        """Close an unsettled reservation: confirm it as a sale or free its slot; False if unknown."""

    async def top_up(self, buyer_id: str, amount: Decimal) -> Decimal:
        """Add to (or, negative, correct) a prepaid balance; returns the new balance at once."""

    async def balance(self, buyer_id: str) -> Decimal:
        """The buyer's prepaid balance (0 when never topped up)."""


class DedupeStore(Protocol):
    def fingerprint(self, values: list[str]) -> str:
        """A keyed one-way digest of already-normalised identity values: no PII, not guessable."""

    async def seen_or_add(self, key: str, ttl_s: float, *, add: bool) -> bool:
        """True when `key` was seen within its ttl; records it when `add`."""


class SuppressionStore(Protocol):
    """Suppression lists of keyed digests (`DedupeStore.fingerprint` of kind and normalised value),
    global (buyer "") or one buyer's; shared by every process using the store."""

    async def change(self, name: str, buyer: str, digests: Sequence[str], *, add: bool) -> int:
        """Add or remove entries of list `name`; how many were new (add) or removed."""

    async def hits(self, digests: Sequence[str]) -> list[tuple[str, str]]:
        """Every (list, buyer) holding any of these digests; buyer "" for a global list."""

    async def sizes(self) -> dict[tuple[str, str], int]:
        """Entries per (list, buyer)."""


class RotationStore(Protocol):
    async def next_turn(self, key: str) -> int:
        """A counter shared by every process using this store (0, 1, 2, …): whose turn it is for
        round-robin and weighted orders is derived from it, so replicas rotate as one."""


class VolumeStore(Protocol):
    async def counts(self, subject: str, now: float) -> dict[str, int]:
        """Leads so far for `subject` ("source:s1", "buyer:b2") in the current UTC hour, day,
        week and month, keyed by period; for volume pricing rules."""

    async def add(self, subject: str, now: float) -> None:
        """Count one more lead for `subject`."""


class BuyerStats(Protocol):
    def accept_rate(self, buyer_id: str) -> Decimal:
        """The buyer's measured post-accept rate (smoothed, so a newcomer is not punished)."""

    def record_post(self, buyer_id: str, accepted: bool) -> None:
        """Count one post outcome."""


class IdempotencyStore(Protocol):
    async def once(self, lead_id: str, work: Callable[[], Awaitable[RoutingResult]]) -> RoutingResult:
        """Run `work` for the first request of `lead_id`; later ones get a copy marked replayed.
        `lead_id` is the answer key (outcome.answer_key): a test call's is "~<lead_id>"."""

    async def remember(self, result: RoutingResult) -> None:
        """Keep the answer of a lead whose `work` failed after routing and that was booked later."""

    async def backed_by(self, books: PastAnswers) -> None:
        """From now on a lead_id this store cannot answer is looked up in the books."""


class PastAnswers(Protocol):
    """The books' answers (records/answers.py), as the idempotency stores fall back on them."""

    async def answer(self, lead_id: str) -> RoutingResult | None:
        """The answer the books hold for this answer key, or None."""

    async def recent(self) -> Sequence[str]:
        """Answer keys recent enough that a restarted process should still recognise them."""


class LeadInFlight(RuntimeError):
    """The same lead_id is being routed by another call that did not answer within our deadline."""
