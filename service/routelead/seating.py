"""Who may be asked about a lead, decided before any ping: schedule, filter, cap, buyer dedupe,
circuit breaker; and the consumer's identity for the pre-ping duplicate check. Hot-state I/O."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

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

    async def tier(
        self, flow: Flow, tier: Tier, facts: Facts, identity: str, scopes: tuple[str, ...]
    ) -> TierSpec:
        """Every buyer of the tier gets a seat, in this lead's order; ineligible ones with a reason."""
        members = list(tier.buyers)
        if tier.rotates:
            turn = await self._rotation.next_turn(f"{flow.id}/{tier.name}")
            members = [members[i] for i in rotation(len(members), turn, tier.sequence)]
        ranked = flow.ranking != "price"  # only other rankings read the accept rate
        seats = [await self._seat(b, facts, identity, scopes, ranked) for b in members]
        # Paused members are not asked, but the answer says so (and who paused them, when).
        seats += [Seat(Bidder(buyer_id), (Status.PAUSED, why)) for buyer_id, why in tier.paused]
        return TierSpec(tier.name, tuple(seats), tier.mode, tier.order, tier.floor)

    async def _seat(
        self, buyer: Buyer, facts: Facts, identity: str, scopes: tuple[str, ...], ranked: bool
    ) -> Seat:
        epoch = self._clock()
        assert facts.now is not None
        skip: tuple[Status, str] | None = None
        if buyer.schedule is not None and (closed := buyer.schedule.closed_reason(facts.now)):
            skip = Status.SKIPPED_SCHEDULE, closed
        elif (why := buyer.filter.failure(facts)) is not None:
            skip = Status.SKIPPED_FILTER, f"filter: {why}"
        elif buyer.capped and not self._caps.has_room(buyer.caps, epoch, buyer.fixed_price, scopes):
            skip = (
                Status.SKIPPED_CAP,
                (
                    f"cap reached: {describe(buyer.caps)}"
                    if self._caps.healthy
                    else "cap state unavailable: not sold to while its counters are unknown"
                ),
            )
        elif identity and buyer.dedupe_ttl_s and (why := await self._seen_by_buyer(buyer, identity)):
            skip = Status.DUPLICATE_FOR_BUYER, why
        elif buyer.breaker_failures and (
            tripped := self._breakers.get(buyer.id, buyer.breaker_failures, buyer.breaker_cooldown_s).allow(
                time.monotonic()
            )
        ):
            skip = Status.SKIPPED_CIRCUIT, tripped
        counts = (
            counts_of("buyer", await self._volume.counts(f"buyer:{buyer.id}", epoch))
            if skip is None and buyer.pricing.uses_volume
            else {}
        )
        bidder = Bidder(
            buyer.id,
            buyer.priority,
            buyer.fixed_price,
            buyer.payment_days,
            buyer.pricing,
            self._stats.accept_rate(buyer.id) if ranked and skip is None else DEFAULT_ACCEPT_RATE,
            counts,
            buyer.price_on_post,
        )
        return Seat(bidder, skip)

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
