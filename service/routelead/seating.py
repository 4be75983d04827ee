"""Who may be asked about a lead, decided before any ping: schedule, filter, cap, buyer dedupe,
circuit breaker; and the consumer's identity for the pre-ping duplicate check. Hot-state I/O."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from routelead.config.runtime import Buyer, Flow, Tier
from routelead.domain.auction import DEFAULT_ACCEPT_RATE, Bidder, Seat, TierSpec
from routelead.domain.breaker import Breakers
from routelead.domain.identity import normalise
from routelead.domain.lead import Lead, LeadSchema
from routelead.domain.outcome import Sale, Status
from routelead.domain.rules import Facts
from routelead.domain.tree import rotation
from routelead.state.plan import describe
from routelead.state.ports import (
    BuyerStats,
    CapStore,
    DedupeStore,
    RotationStore,
    StateUnavailable,
    VolumeStore,
)

log = structlog.get_logger("routelead.router")


@dataclass(frozen=True, slots=True)
class _Later:
    """A seat that needs hot state to decide; `dedupe`: the buyer's own window is still to check."""

    dedupe: bool


class Seating:
    def __init__(
        self,
        caps: CapStore,
        dedupe: DedupeStore,
        rotation: RotationStore,
        stats: BuyerStats,
        volume: VolumeStore,
        breakers: Breakers,
        clock: Callable[[], float],
    ) -> None:
        self._caps = caps
        self._dedupe = dedupe
        self._rotation = rotation
        self._stats = stats
        self._volume = volume
        self._breakers = breakers
        self._clock = clock
        self._plain_seats: dict[str, tuple[Buyer, Seat]] = {}

    async def tier(
        self, flow: Flow, tier: Tier, facts: Facts, identity: str, scopes: tuple[str, ...]
    ) -> TierSpec:
        """Every buyer of the tier gets a seat, in this lead's order; ineligible ones with a reason."""
        members = list(tier.buyers)
        if tier.rotates:
            turn = await self._rotation.next_turn(f"{flow.id}/{tier.name}")
            members = [members[i] for i in rotation(len(members), turn, tier.sequence)]
        ranked = flow.ranking != "price"  # only other rankings read the accept rate
        seats = []
        for b in members:
            seat = self._seat_now(b, facts, identity, scopes, ranked)
            seats.append(seat if isinstance(seat, Seat) else await self._seat(b, seat, identity, ranked))
        # Paused members are not asked, but the answer says so (and who paused them, when).
        seats += [Seat(Bidder(buyer_id), (Status.PAUSED, why)) for buyer_id, why in tier.paused]
        return TierSpec(tier.name, tuple(seats), tier.mode, tier.order, tier.floor)

    def _seat_now(
        self, buyer: Buyer, facts: Facts, identity: str, scopes: tuple[str, ...], ranked: bool
    ) -> Seat | _Later:
        """The seat, when deciding it needs no hot-state call (most buyers, most leads): no
        coroutine per buyer, and the part that does not change reused. Otherwise what is left
        to ask. The order of the checks is the order of the reasons a buyer is shown."""
        assert facts.now is not None
        plain = self._plain(buyer)
        if buyer.schedule is not None and (closed := buyer.schedule.closed_reason(facts.now)):
            return Seat(plain.bidder, (Status.SKIPPED_SCHEDULE, closed))
        if (why := buyer.filter.failure(facts)) is not None:
            return Seat(plain.bidder, (Status.SKIPPED_FILTER, f"filter: {why}"))
        if buyer.capped and not self._caps.has_room(buyer.caps, self._clock(), buyer.fixed_price, scopes):
            reason = (
                f"cap reached: {describe(buyer.caps)}"
                if self._caps.healthy
                else "cap state unavailable: not sold to while its counters are unknown"
            )
            return Seat(plain.bidder, (Status.SKIPPED_CAP, reason))
        if identity and buyer.dedupe_ttl_s:
            return _Later(dedupe=True)  # its own duplicate window first, then the breaker
        if (tripped := self._tripped(buyer)) is not None:
            return Seat(plain.bidder, tripped)
        if buyer.pricing.uses_volume or ranked:
            return _Later(dedupe=False)
        return plain

    def _tripped(self, buyer: Buyer) -> tuple[Status, str] | None:
        # Asked last: a half-open breaker lets one probe through, which must then be pinged.
        if buyer.breaker_failures and (
            tripped := self._breakers.get(buyer.id, buyer.breaker_failures, buyer.breaker_cooldown_s).allow(
                time.monotonic()
            )
        ):
            return Status.SKIPPED_CIRCUIT, tripped
        return None

    def _plain(self, buyer: Buyer) -> Seat:
        """The seat of an eligible buyer whose bidder carries nothing of this lead, kept per
        buyer object (a new configuration brings new objects)."""
        kept = self._plain_seats.get(buyer.id)
        if kept is None or kept[0] is not buyer:
            bidder = Bidder(
                buyer.id,
                buyer.priority,
                buyer.fixed_price,
                buyer.payment_days,
                buyer.pricing,
                DEFAULT_ACCEPT_RATE,
                {},
                buyer.price_on_post,
            )
            kept = self._plain_seats[buyer.id] = (buyer, Seat(bidder))
        return kept[1]

    async def _seat(self, buyer: Buyer, later: _Later, identity: str, ranked: bool) -> Seat:
        """What `_seat_now` left: the buyer's own duplicate window (then its breaker), volume
        counts for its pricing, its accept rate for the ranking."""
        plain = self._plain(buyer)
        if later.dedupe:
            if why := await self._seen_by_buyer(buyer, identity):
                return Seat(plain.bidder, (Status.DUPLICATE_FOR_BUYER, why))
            if (tripped := self._tripped(buyer)) is not None:
                return Seat(plain.bidder, tripped)
        if not (buyer.pricing.uses_volume or ranked):
            return plain
        epoch = self._clock()
        counts = (
            counts_of("buyer", await self._volume.counts(f"buyer:{buyer.id}", epoch))
            if buyer.pricing.uses_volume
            else {}
        )
        accept = self._stats.accept_rate(buyer.id) if ranked else DEFAULT_ACCEPT_RATE
        return Seat(dataclasses.replace(plain.bidder, accept_rate=accept, counts=counts))

    def identity(self, flow: Flow, lead: Lead, schema: LeadSchema) -> str:
        """A keyed digest of the consumer's normalised identity fields: dedupe keys hold no PII."""
        if not flow.dedupe_fields:
            return ""
        fields = schema.fields
        values = [
            normalise(fields[n].type if n in fields else "string", lead.fields.get(n, ""))
            for n in flow.dedupe_fields
        ]
        return self._dedupe.fingerprint(values) if any(values) else ""

    async def seen_in_flow(self, flow: Flow, identity: str, test: bool) -> bool:
        try:
            return await self._dedupe.seen_or_add(
                f"lead|{flow.id}|{identity}", flow.dedupe_ttl_s, add=not test
            )
        except StateUnavailable as exc:
            # Fail open: a lead is worth more than a missed repeat; buyers' own checks still apply.
            log.warning("dedupe.unavailable", flow=flow.id, error=str(exc))
            return False

    async def _seen_by_buyer(self, buyer: Buyer, identity: str) -> str:
        """Why this buyer must not get this consumer again ("" when it may)."""
        try:
            if await self._dedupe.seen_or_add(f"buyer|{buyer.id}|{identity}", buyer.dedupe_ttl_s, add=False):
                return f"bought this consumer within the last {buyer.dedupe_ttl_s / 86400:.0f} days"
        except StateUnavailable:
            # Fail closed for this buyer: it is not offered a consumer it may already have bought.
            return "duplicate check unavailable: not offered while its history is unknown"
        return ""

    async def remember_buyers(
        self, buyers: Mapping[str, Buyer], sales: tuple[Sale, ...], identity: str
    ) -> None:
        """Per-buyer dedupe: this buyer has now bought this consumer."""
        for s in sales:
            b = buyers.get(s.buyer_id)
            if b is not None and b.dedupe_ttl_s:
                try:
                    await self._dedupe.seen_or_add(f"buyer|{b.id}|{identity}", b.dedupe_ttl_s, add=True)
                except StateUnavailable as exc:
                    log.warning("dedupe.unrecorded", buyer=b.id, error=str(exc))


def counts_of(kind: str, by_period: dict[str, int]) -> dict[str, int]:
    return {f"{kind}:{period}": n for period, n in by_period.items()}
