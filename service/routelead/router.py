"""The auction's driver. One lead, top to bottom: validate → dedupe → seat the buyers → run the
auction machine (ping, post, done) → book → answer.

The decisions (order, floors, conditions, allocation, fallbacks, explanations, cost and revenue)
are the machine's, in `domain/auction.py`; this module does the I/O around them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

import structlog
from opentelemetry import trace

from routelead.buyer_calls import BuyerCalls, Intend, Routed
from routelead.checks import ComplianceChecks, suppress
from routelead.config.runtime import RuntimeConfig
from routelead.domain.auction import Auction, AuctionSpec, Done, Ping
from routelead.domain.breaker import Breakers
from routelead.domain.lead import LeadInvalid
from routelead.domain.money import to_cents
from routelead.domain.outcome import Attempt, Outcome, RoutingResult, answer_key
from routelead.domain.request import RequestDigester
from routelead.domain.rules import Facts
from routelead.intake import LeadConflict, LeadRequest, NotFound, same_request, validate
from routelead.lookups import Lookups
from routelead.records.guard import BooksGuard
from routelead.records.intents import Intent
from routelead.records.port import AlreadyOffered, BooksUnavailable, QuoteWriter
from routelead.seating import Seating, counts_of
from routelead.state.memory import MemoryBuyerStats, MemoryRotationStore, MemoryVolumeStore
from routelead.state.ports import (
    BuyerStats,
    CapStore,
    DedupeStore,
    IdempotencyStore,
    LeadInFlight,
    Reservation,
    RotationStore,
    SuppressionStore,
    VolumeStore,
    lead_deadline,
)
from routelead.state.quotes import QuoteLimiter, QuoteStore
from routelead.telemetry.decision import lead_span_result, log_decision
from routelead.telemetry.metrics import record_lead
from routelead.telemetry.spans import ledger_span
from routelead.transport import Transport

# Kept back from a caller's own gRPC deadline so our answer reaches it in time.
REPLY_MARGIN_S = 0.02
# Lookups (verifiers) may use at most this share of a lead's deadline; the rest is the buyers'.
LOOKUP_SHARE = 0.5

log = structlog.get_logger("routelead.router")
tracer = trace.get_tracer("routelead")


@dataclass(frozen=True, slots=True)
class RouterParts:
    """Every adapter the driver uses, built once by the composition root (api/server.py, api/app.py)
    and handed over whole: the router sets nothing up on them."""

    config: RuntimeConfig
    transport: Transport
    caps: CapStore
    dedupe: DedupeStore
    idempotency: IdempotencyStore
    rotation: RotationStore = field(default_factory=MemoryRotationStore)
    stats: BuyerStats = field(default_factory=MemoryBuyerStats)
    volume: VolumeStore = field(default_factory=MemoryVolumeStore)
    clock: Callable[[], float] = time.time
    # The books, fail-closed (records/guard.py); None: no books (tests, the demo without them).
    books: BooksGuard | None = None
    suppression: SuppressionStore | None = None
    # Shared with the Admin API, which shows and resets them.
    breakers: Breakers = field(default_factory=Breakers)
    # Inbound ping-post (inbound.py): open quotes, each source's quote limits, the quotes' books.
    quotes: QuoteStore | None = None
    quote_limits: QuoteLimiter | None = None
    quote_books: QuoteWriter | None = None


class Router:
    def __init__(self, parts: RouterParts) -> None:
        self.config = parts.config
        self._idempotency = parts.idempotency
        self.books = parts.books
        self.breakers = parts.breakers
        self._volume = parts.volume
        clock, caps, stats = parts.clock, parts.caps, parts.stats
        self._seating = Seating(caps, parts.dedupe, parts.rotation, stats, self._volume, self.breakers, clock)
        self._calls = BuyerCalls(parts.transport, caps, stats, self._volume, self.breakers, clock)
        self._checks = ComplianceChecks(parts.suppression, parts.dedupe.fingerprint, Lookups(parts.transport))
        self._clock = clock
        self._offers: dict[str, _Offers] = {}
        # Keyed by the dedupe key, so replicas sharing it compare each other's requests.
        key = parts.dedupe.fingerprint(["routelead request digest"])
        self._digester = RequestDigester(bytes.fromhex(key))

    async def route(self, req: LeadRequest) -> RoutingResult:
        """Route one lead; raises LeadInvalid (bad request) or NotFound (unknown flow / source)."""
        # One configuration for the whole lead, even if a new version goes live meanwhile.
        routed = validate(req, self.config)
        budget = routed.flow.deadline_s
        if req.caller_budget_s is not None:
            # Kept back for the answer's way home: 10 % of the caller's time, at least REPLY_MARGIN_S.
            margin = max(REPLY_MARGIN_S, req.caller_budget_s * 0.1)
            budget = max(0.0, min(budget, req.caller_budget_s - margin))
        # A test call's answer has a slot of its own: it never answers (or blocks) the real lead.
        key = answer_key(routed.id, routed.test)
        digest = self._digester.digest(req.fields)
        if self.books is not None and (held := await self.books.answer(key)) is not None:
            # Routed by an earlier call whose answer waited for the books: that answer, never a new route.
            same_request(held, routed, digest)
            return replace(held, replayed=True)
        # Every hot-state call made for this lead is bounded by its deadline.
        lead_deadline.set(time.monotonic() + budget)
        result = await self._idempotency.once(key, lambda: self._route(routed, budget, digest))
        if result.replayed:
            same_request(result, routed, digest)
        return result

    async def _route(self, routed: Routed, budget_s: float, digest: str) -> RoutingResult:
        if self.books is not None:
            self.books.check()  # before any buyer is asked
        started = time.monotonic()
        received_at = self._clock()
        flow, source, version = routed.flow, routed.source, routed.config.version
        attributes: dict[str, str | bool] = {
            "lead.id": routed.id,
            "flow": flow.id,
            "source": source.id,
            "test": routed.test,
        }
        with tracer.start_as_current_span(
            "RouteLead", kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:
            result = RoutingResult(
                routed.id, flow.id, source.id, routed.test, Outcome.UNSOLD, Decimal("0.00")
            )
            result.config_version, result.request_digest = version, digest
            result.trace_id = format(span.get_span_context().trace_id, "032x")
            result.lead_type = flow.lead_type
            identity = self._seating.identity(flow, routed.lead, routed.config.schema_of(flow))
            if (
                identity
                and flow.dedupe_ttl_s
                and await self._seating.seen_in_flow(flow, identity, routed.test)
            ):
                result.outcome = Outcome.DUPLICATE
            elif (
                looked := await self._checks.run(routed, result, started + budget_s * LOOKUP_SHARE)
            ) is None:
                result.outcome = Outcome.REJECTED  # a compliance check refused it: no buyer asked
            else:
                spec = await self._spec(routed, identity, started, budget_s, looked.facts)
                if looked.blocked:
                    spec = suppress(spec, looked.blocked)
                machine = Auction(spec, started)
                self._offers[routed.id] = _Offers(
                    lambda price: to_cents(spec.source_pricing.cost(spec.fixed_cost, price))
                )
                try:
                    done = await self._drive(machine, routed)
                except AlreadyOffered:
                    # Another call (any process, any replica) offered or answered this lead_id.
                    return await self._books_answer(routed.id)
                finally:
                    del self._offers[routed.id]
                result.attempts, result.sales, result.cost = machine.attempts, list(done.sales), done.cost
                if done.sales:
                    result.outcome = Outcome.SOLD
                    if identity and not routed.test:
                        await self._seating.remember_buyers(routed.config.buyers, done.sales, identity)
                elif machine.unsettled:
                    result.outcome = Outcome.UNSETTLED  # a buyer may hold it: settle before reselling
            result.elapsed_ms = (time.monotonic() - started) * 1000
            lead_span_result(span, result)
            log_decision(result, version)  # inside the span: the line carries its ids
            if self.books is not None:
                # Before the answer: a lead the caller hears about is already on the books.
                with ledger_span("lead", routed.id, outcome=result.outcome.value):
                    booked = await self.books.record(result, routed.lead.ping_fields, received_at, version)
                if not booked:
                    # Answered or offered by an earlier call: the books' answer, not this one.
                    return await self._books_answer(routed.id)
        record_lead(result, budget_s)
        return result

    async def _spec(
        self,
        routed: Routed,
        identity: str,
        started: float,
        budget_s: float,
        looked: Mapping[str, str] | None = None,
    ) -> AuctionSpec:
        """What the auction decides from: the lead's facts (with its lookups'), its floors and
        every buyer's seat."""
        flow, source = routed.flow, routed.source
        epoch = self._clock()
        now = datetime.fromtimestamp(epoch, UTC)
        subject = f"source:{source.id}"
        counted = source.pricing.book.uses_volume
        counts = counts_of("source", await self._volume.counts(subject, epoch)) if counted else {}
        age = routed.config.schema_of(flow).lead_age_s(routed.lead, now)
        facts = Facts({**routed.lead.fields, **looked} if looked else routed.lead.fields, age, now, counts)
        # Known before any buyer is asked: the fixed part of the cost, so margin protection can
        # turn it into a floor.
        fixed_cost = source.pricing.fixed_cost(facts) + flow.fee
        if counted and not routed.test:
            await self._volume.add(subject, epoch)
        tiers = [await self._seating.tier(flow, t, facts, identity, routed.scopes) for t in flow.tiers]
        return flow.auction(
            tiers,
            facts,
            now,
            # The ping window leaves time to post; on a short budget, at least 60 % goes to pings.
            ping_end=started + max(budget_s - flow.post_reserve_s, budget_s * 0.6),
            deadline=started + budget_s,
            pricing=source.pricing,
            fixed_cost=fixed_cost,
            pay_on=source.pay_on,
            margin_floor=flow.margin_floor(source, fixed_cost),
            test=routed.test,
        )

    async def _drive(self, machine: Auction, routed: Routed) -> Done:
        """Do what the machine asks until it is done: pings all at once, posts side by side."""
        buyers, attempts = routed.config.buyers, machine.attempts
        action = machine.action
        while not isinstance(action, Done):
            if isinstance(action, Ping):
                calls = [(i, buyers[attempts[i].buyer_id], attempts[i]) for i in action.seats]
                pinged = await self._calls.ping_all(routed, calls, action.until)
                action = machine.send(time.monotonic(), pinged)
            else:
                intend, deadline = self._intender(routed), machine.spec.deadline
                posts = [
                    self._calls.post(
                        buyers[attempts[o.seat].buyer_id], attempts[o.seat], o, routed, deadline, intend
                    )
                    for o in action.orders
                ]
                posted = await asyncio.gather(*posts)
                action = machine.send(
                    time.monotonic(), {o.seat: p for o, p in zip(action.orders, posted, strict=True)}
                )
        return action

    async def _books_answer(self, lead_id: str) -> RoutingResult:
        assert self.books is not None
        earlier = await self.books.books_answer(lead_id)
        if earlier is None:
            raise LeadInFlight(f"lead {lead_id} is being routed by another call; retry later")
        log.info("lead.answered_from_books", lead_id=lead_id, outcome=earlier.outcome.value)
        return replace(earlier, replayed=True)

    def _intender(self, routed: Routed) -> Intend | None:
        if self.books is None or self.books.intents is None or routed.test:
            return None

        async def intend(
            a: Attempt, r: Reservation | None, price: Decimal, exclusive: bool, wait_s: float
        ) -> None:
            """Commit this post's intent before it leaves. Raises AlreadyOffered (another call has
            the lead: post nothing) or BooksUnavailable (the books did not take it: not posted)."""
            assert self.books is not None
            claim = self._offers[routed.id]
            if claim.failed:
                raise BooksUnavailable(claim.failed)
            intent = Intent(
                routed.id,
                0,
                a.buyer_id,
                r.id if r is not None else "",
                price,
                claim.cost(price),
                exclusive,
                a.tier,
                routed.flow.id,
                routed.source.id,
                routed.config.version,
                self._clock(),
            )
            if claim.first is None:
                first = claim.first = asyncio.get_running_loop().create_future()
                first.add_done_callback(lambda f: f.cancelled() or f.exception())
                try:
                    ours = await self.books.offer(intent, wait_s)
                except BooksUnavailable as exc:
                    claim.failed = str(exc)
                    first.set_exception(exc)
                    raise
                first.set_result(ours)
                if not ours:
                    raise AlreadyOffered(routed.id)
                return
            # A later post of the lead (a shared sale, or the next bid after a rejection).
            if not await asyncio.shield(claim.first):
                raise AlreadyOffered(routed.id)
            claim.seq += 1
            await self.books.offer(replace(intent, seq=claim.seq), wait_s)

        return intend


@dataclass(slots=True)
class _Offers:
    """One lead's intents (`records/intents.py`): the first post's committed intent guards the
    lead against every other process; the lead's later posts follow it."""

    # The lead's cost if a post at this price were its only sale: what a late confirmation books.
    cost: Callable[[Decimal], Decimal]
    first: asyncio.Future[bool] | None = None
    seq: int = 0
    # The books did not confirm an offer of this lead: it is posted to nobody more.
    failed: str = ""


__all__ = ["LeadConflict", "LeadInvalid", "LeadRequest", "NotFound", "Router"]
