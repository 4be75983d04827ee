"""The cap store as the service runs it: every reservation step of any adapter is a span.

Built by the composition root around whichever store it built; the telemetry layer keeps the span
helpers and knows nothing of the state ports.
"""

from __future__ import annotations

from decimal import Decimal

from routelead.state.ports import CapLimits, CapStore, Reservation, UnsettledSale
from routelead.telemetry.spans import cap_span


class TracedCapStore:
    """A CapStore that records a span for every reservation step of the wrapped store."""

    def __init__(self, inner: CapStore) -> None:
        self.inner = inner
        self.metrics = inner.metrics

    @property
    def healthy(self) -> bool:
        return self.inner.healthy

    def has_room(
        self, caps: CapLimits, now: float, price: Decimal | None = None, scopes: tuple[str, ...] = ()
    ) -> bool:
        # The fast pre-check runs for every buyer of every lead; its result is on the attempt.
        return self.inner.has_room(caps, now, price, scopes)

    async def reserve(
        self,
        caps: CapLimits,
        lead_id: str,
        now: float,
        price: Decimal = Decimal("0"),
        scopes: tuple[str, ...] = (),
    ) -> Reservation | None:
        with cap_span("reserve", caps.buyer_id, lead_id) as span:
            r = await self.inner.reserve(caps, lead_id, now, price, scopes)
            span.set_attributes(
                {"cap.reserved": r is not None, "cap.periods": ",".join(p for p, _ in caps.limits)}
            )
            return r

    async def commit(self, r: Reservation, outbox: bytes | None = None, cents: int | None = None) -> None:
        with cap_span("commit", r.buyer_id, r.lead_id):
            await self.inner.commit(r, outbox, cents)

    async def release(self, r: Reservation) -> None:
        with cap_span("release", r.buyer_id, r.lead_id):
            await self.inner.release(r)

    async def unsettled(self, r: Reservation, reason: str) -> None:
        with cap_span("unsettled", r.buyer_id, r.lead_id):
            await self.inner.unsettled(r, reason)

    # Operations are not on a lead's path: passed through untraced.
    async def list_unsettled(self, older_than_s: float = 30.0) -> list[UnsettledSale]:
        return await self.inner.list_unsettled(older_than_s)

    async def settle(
        self, buyer_id: str, reservation_id: str, *, accepted: bool, outbox: bytes | None = None
    ) -> bool:
        return await self.inner.settle(buyer_id, reservation_id, accepted=accepted, outbox=outbox)

    async def top_up(self, buyer_id: str, amount: Decimal) -> Decimal:
        return await self.inner.top_up(buyer_id, amount)

    async def balance(self, buyer_id: str) -> Decimal:
        return await self.inner.balance(buyer_id)
