"""The buyers' side of an auction: pings in parallel and posts behind a cap reservation.

Each call answers in the auction machine's terms (bid / no bid / timed out / error; accepted /
rejected / outcome unknown / never delivered / no cap room); the machine decides what follows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from routelead.buyers.base import BadAnswer, ErrorStatus, HttpAnswer, HttpRequest, PostAnswer
from routelead.config.runtime import Buyer, Flow, RuntimeConfig, Source
from routelead.domain.auction import MIN_POST_S, Contract, PingReply, PostOrder, PostReply, contract
from routelead.domain.breaker import Breakers
from routelead.domain.lead import Lead
from routelead.domain.mapping import Transaction
from routelead.domain.money import fmt
from routelead.domain.outcome import Attempt
from routelead.domain.redact import redact, scrub_secrets
from routelead.records.codec import SaleRecord, encode
from routelead.records.port import AlreadyOffered, BooksUnavailable
from routelead.state import plan
from routelead.state.ports import BuyerStats, CapStore, Reservation, StateUnavailable, VolumeStore
from routelead.telemetry.decision import PING_STATUS, POST_STATUS, BidSpan, buyer_span, span_result
from routelead.telemetry.propagation import with_traceparent
from routelead.transport import Transport, TransportError, TransportTimeout

# Commits a post's intent before it leaves: (attempt, reservation, price, exclusive, wait_s).
Intend = Callable[[Attempt, Reservation | None, Decimal, bool, float], Awaitable[None]]
# How long past its own timeouts a ping task may run before it is cancelled regardless.
_SAFETY_S = 0.02


class BuyerCalls:
    def __init__(
        self,
        transport: Transport,
        caps: CapStore,
        stats: BuyerStats,
        volume: VolumeStore,
        breakers: Breakers,
        clock: Callable[[], float],
    ) -> None:
        self._transport = transport
        self._caps = caps
        self._stats = stats
        self._volume = volume
        self._breakers = breakers
        self._clock = clock

    async def ping_all(
        self, routed: Routed, calls: Sequence[tuple[int, Buyer, Attempt]], until: float
    ) -> dict[int, PingReply]:
        """Every ping at once; a ping still out when the window closes is no answer (timed out)."""
        tasks = [asyncio.create_task(self._ping(b, a, routed, until)) for _, b, a in calls]
        # Each ping bounds itself; this outer wait is the belt to those braces.
        _, late = await asyncio.wait(tasks, timeout=max(0.0, until - time.monotonic()) + _SAFETY_S)
        for task in late:
            task.cancel()
        return {i: t.result() for (i, _, _), t in zip(calls, tasks, strict=True) if t not in late}

    async def _ping(self, buyer: Buyer, a: Attempt, routed: Routed, until: float) -> PingReply:
        endpoint = buyer.endpoints(routed.flow.lead_type)[0]
        assert endpoint is not None and buyer.ping_parser is not None
        timeout = min(endpoint.timeout_s, until - time.monotonic())
        request = endpoint.request(routed.lead.ping_fields, Transaction(routed.id))
        with BidSpan("ping", buyer.id, a.tier, current=buyer.trace_context) as span:
            if buyer.trace_context:
                request = with_traceparent(request)
            t0 = time.perf_counter()
            try:
                answer = await self._transport.send(request, timeout, buyer.ping_max_body)
            except TransportTimeout as exc:
                got = PingReply("timed_out", f"ping timed out: {exc}")
            except TransportError as exc:
                got = PingReply("error", f"ping failed: {exc}")
            else:
                a.http_status = answer.status
                try:
                    parsed = buyer.ping_parser.parse(answer)
                except BadAnswer as exc:
                    got = PingReply("error", f"bad answer: {exc}")
                else:
                    reason = scrub_secrets(parsed.reason, buyer.secret_values)
                    if parsed.bid:
                        # Carried from the ping answer into the post; never shown to callers.
                        a.ping_id, a.carried = parsed.ping_id, parsed.carried
                        got = PingReply("bid", reason, parsed.price, parsed.exclusive, parsed.conditions)
                    else:
                        got = PingReply("no_bid", reason)
            a.ping_ms = (time.perf_counter() - t0) * 1000
            span.result(PING_STATUS[got.kind], a.http_status, got.price, a.ping_ms)
        self._health(buyer, ok=got.kind in ("bid", "no_bid"))
        return got

    async def post(
        self, buyer: Buyer, a: Attempt, order: PostOrder, deal: Routed, deadline: float, intend: Intend | None
    ) -> PostReply:
        """Reserve, post the full lead, settle the reservation: the buyer's answer for the machine."""
        remaining = deadline - time.monotonic()
        if remaining < MIN_POST_S:
            return PostReply("late")
        # Every post is reserved first, capped buyer or not: the reservation marks "posting now",
        # so a process killed before it settles leaves an orphan to reconcile, and the commit
        # appends the sale to the books' outbox in the same atomic step (Redis).
        reservation: Reservation | None = None
        try:
            reservation = await self._caps.reserve(
                buyer.caps, deal.id, self._clock(), order.price, deal.scopes
            )
        except StateUnavailable:
            if buyer.capped:
                return PostReply("capped", "cap state unavailable: not sold to while unknown")
            # Uncapped buyers still sell while Redis is down; the ledger write before the answer books it.
        else:
            if reservation is None:
                return PostReply("capped", "cap, budget or balance reached before the post")
        if intend is not None:
            # No post leaves without its intent on the books (`records/intents.py`).
            try:
                await intend(a, reservation, order.price, order.exclusive, remaining - MIN_POST_S)
            except (AlreadyOffered, BooksUnavailable) as exc:
                if reservation is not None:
                    await self._caps.release(reservation)
                if isinstance(exc, AlreadyOffered):
                    raise  # another call has the lead: this one answers from the books
                return PostReply("withheld", f"not posted: {exc}")
            remaining = max(deadline - time.monotonic(), MIN_POST_S)
        # Seed 000's post_id: one per post attempt, for matching the buyer's records to ours.
        a.post_id = uuid.uuid4().hex
        txn = Transaction(deal.id, a.ping_id, fmt(order.price), a.carried, a.post_id)
        request = buyer.endpoints(deal.flow.lead_type)[1].request(deal.lead.fields, txn)
        with buyer_span("post", buyer.id, a.tier, current=buyer.trace_context) as span:
            span.set_attribute("post.id", a.post_id)
            if buyer.trace_context:
                request = with_traceparent(request)
            t0 = time.perf_counter()
            note: list[str] = []
            got: PostReply | None
            try:
                answer = await self._send_post(buyer, request, deadline, note)
                a.http_status = answer.status
                parsed = buyer.post_parser.parse(answer)
            except (TransportError, BadAnswer) as exc:
                self._health(buyer, ok=False)
                if isinstance(exc, TransportError):
                    why, maybe = f"post failed: {exc}", exc.delivered_maybe
                elif isinstance(exc, ErrorStatus):
                    # An HTTP error status is an answer: the buyer did not take the lead.
                    why, maybe = f"post refused: {exc}; not accepted", False
                else:
                    why, maybe = f"bad post answer: {exc}", True
                got = await self._unknown_or_release(reservation, maybe, "".join(note) + why)
            else:
                got = None
            a.post_ms = (time.perf_counter() - t0) * 1000
            if got is not None:
                status = POST_STATUS[got.kind]
            else:
                status = "POST_ACCEPTED" if parsed.accepted else "POST_REJECTED"
            span_result(span, status, a.http_status, order.price, a.post_ms)
        if got is None:  # the buyer answered: the reservation is settled after the post's span
            got = await self._answered(buyer, a, order, deal, reservation, parsed)
        return got

    async def _send_post(
        self, buyer: Buyer, request: HttpRequest, deadline: float, note: list[str]
    ) -> HttpAnswer:
        """A post that provably never left (refused before sending) is tried once more while time
        remains; any other failure may have reached the buyer and is never repeated."""
        for last in (False, True):
            timeout = min(buyer.post.timeout_s, deadline - time.monotonic())
            try:
                return await self._transport.send(request, timeout, buyer.post_max_body)
            except TransportError as exc:
                if last or exc.delivered_maybe or deadline - time.monotonic() < MIN_POST_S:
                    raise
                note.append(f"first post never left ({exc}), tried once more; ")
        raise AssertionError("unreachable")

    async def _answered(
        self,
        buyer: Buyer,
        a: Attempt,
        order: PostOrder,
        deal: Routed,
        r: Reservation | None,
        parsed: PostAnswer,
    ) -> PostReply:
        self._stats.record_post(buyer.id, parsed.accepted)
        said = scrub_secrets(redact(parsed.reason, deal.lead.pii_values), buyer.secret_values)
        if not parsed.accepted:
            if r is not None:
                await self._caps.release(r)
            return PostReply("rejected", f"post rejected: {said or 'no reason given'}")
        # The bid is the contract: what the sale is booked at, and counted against budgets.
        deal_price = contract(order, parsed.price, buyer.price_on_post, buyer.fixed_price is not None)
        price = deal_price.price
        if r is not None:
            sale = deal.sale(
                buyer.id, deal_price, parsed.buyer_lead_id, order.exclusive, a.tier, self._clock()
            )
            await self._caps.commit(r, encode(sale), plan.to_cents(price))
        if buyer.pricing.uses_volume:
            await self._volume.add(f"buyer:{buyer.id}", self._clock())
        return PostReply("accepted", said, parsed.price, parsed.buyer_lead_id)

    async def _unknown_or_release(self, r: Reservation | None, delivered_maybe: bool, why: str) -> PostReply:
        if not delivered_maybe:
            if r is not None:
                await self._caps.release(r)
            return PostReply("failed", why)
        # The buyer may have taken it: the cap slot stays used until someone settles it.
        why += "; outcome unknown, held against the cap until settled"
        if r is not None:
            await self._caps.unsettled(r, why)
        return PostReply("unknown", why)

    def _health(self, buyer: Buyer, *, ok: bool) -> None:
        if buyer.breaker_failures:
            breaker = self._breakers.get(buyer.id, buyer.breaker_failures, buyer.breaker_cooldown_s)
            breaker.record(ok, time.monotonic())


@dataclass(frozen=True, slots=True)
class Routed:
    """One validated lead and where it goes, fixed for its whole route (one config version)."""

    id: str
    flow: Flow
    source: Source
    lead: Lead
    test: bool
    config: RuntimeConfig

    @property
    def scopes(self) -> tuple[str, ...]:
        """Caps and budgets scoped to a flow or a source count this lead under these names."""
        return (f"flow={self.flow.id}", f"source={self.source.id}")

    def sale(
        self, buyer_id: str, deal: Contract, buyer_lead_id: str, exclusive: bool, tier: str, at: float
    ) -> SaleRecord:
        """The sale's ledger record, committed with its reservation (the Redis outbox)."""
        return SaleRecord(
            self.id,
            buyer_id,
            deal.price,
            buyer_lead_id,
            exclusive,
            tier,
            "sold",
            at,
            self.flow.id,
            self.source.id,
            self.test,
            self.config.version,
            stated_price=deal.stated,
        )
