"""The hot-state ports the router depends on; memory adapters here, Redis ones later."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from routelead.domain.outcome import RoutingResult

Period = Literal["hour", "day", "week", "month"]


@dataclass(frozen=True, slots=True)
class CapLimits:
    """A buyer's lead-count caps, counted in its own timezone."""

    buyer_id: str
    timezone: str
    limits: tuple[tuple[Period, int], ...]


@dataclass(frozen=True, slots=True)
class Reservation:
    buyer_id: str
    keys: tuple[str, ...]
    lead_id: str


class CapStore(Protocol):
    def has_room(self, caps: CapLimits, now: float) -> bool:
        """Fast, possibly stale check, so a full buyer is not pinged."""

    async def reserve(self, caps: CapLimits, lead_id: str, now: float) -> Reservation | None:
        """Atomically count one lead against every period, or None when any is full."""

    async def commit(self, r: Reservation) -> None:
        """The buyer accepted: the reservation is a sale."""

    async def release(self, r: Reservation) -> None:
        """The buyer provably did not take the lead: give the slot back."""

    async def unsettled(self, r: Reservation, reason: str) -> None:
        """Outcome unknown: the slot stays counted until someone settles it."""


class DedupeStore(Protocol):
    async def seen_or_add(self, key: str, ttl_s: float, *, add: bool) -> bool:
        """True when `key` was seen within its ttl; records it when `add`."""


class RotationStore(Protocol):
    async def next_turn(self, key: str) -> int:
        """A counter shared by every process using this store (0, 1, 2, …): whose turn it is for
        round-robin and weighted orders is derived from it, so replicas rotate as one."""


class VolumeStore(Protocol):
    def counts(self, subject: str, now: float) -> dict[str, int]:
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
        """Run `work` for the first request of `lead_id`; later ones get a copy marked replayed."""
