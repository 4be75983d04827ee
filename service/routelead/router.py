"""One lead, top to bottom: validate → dedupe → eligible buyers → ping → rank → reserve → post → settle."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import structlog
from opentelemetry import trace

from routelead.buyers.base import BadAnswer
from routelead.config.runtime import Buyer, Flow, RuntimeConfig, Source, Tier
from routelead.domain.breaker import Breakers
from routelead.domain.conditions import check_conditions
from routelead.domain.floors import Floors
from routelead.domain.identity import normalise
from routelead.domain.lead import Lead, LeadInvalid
from routelead.domain.mapping import Transaction
from routelead.domain.money import ZERO, fmt, to_cents
from routelead.domain.outcome import Attempt, Outcome, RoutingResult, Sale, Status
from routelead.domain.pricing import book
from routelead.domain.rules import Facts
from routelead.domain.tree import Offer, allocate, rotation, value
from routelead.records.codec import SaleRecord, encode
from routelead.records.guard import BooksGuard
from routelead.records.intents import Intent
from routelead.records.port import AlreadyOffered, BooksUnavailable, LedgerWriter
from routelead.state import plan
from routelead.state.memory import MemoryBuyerStats, MemoryRotationStore, MemoryVolumeStore
from routelead.state.plan import describe
from routelead.state.ports import (
    BuyerStats,
    CapStore,
    DedupeStore,
    IdempotencyStore,
    LeadInFlight,
    Reservation,
    RotationStore,
    StateUnavailable,
    VolumeStore,
    lead_deadline,
)
from routelead.telemetry.metrics import record_lead
from routelead.telemetry.propagation import with_traceparent
from routelead.telemetry.spans import ledger_span
from routelead.transport import Transport, TransportError, TransportTimeout

_LEAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Below this much time left, a post cannot usefully start.
MIN_POST_S = 0.005
# How long past its own timeouts a ping task may run before it is cancelled regardless.
_SAFETY_S = 0.02
# Kept back from a caller's own gRPC deadline so our answer reaches it in time.
REPLY_MARGIN_S = 0.02

log = structlog.get_logger("routelead.router")
tracer = trace.get_tracer("routelead")


class NotFound(LookupError):
    """Unknown flow or source (gRPC NOT_FOUND)."""


@dataclass(frozen=True, slots=True)
class LeadRequest:
    lead_id: str
    flow: str
    source_id: str
    fields: Mapping[str, str]
    test: bool = False
    # The caller's own remaining gRPC deadline, when it set one.
    caller_budget_s: float | None = None


@dataclass(slots=True)
class _Live:
    """One buyer in play for one lead."""

    buyer: Buyer
    attempt: Attempt
    tier_index: int
    order: int
    pinged: bool = False
    conditions: dict[str, object] = field(default_factory=dict)
    value: Decimal = Decimal(0)
    # Volume counts for the buyer's pricing rules, fetched with the tree when they need them.
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Sale:
    """The sales made so far for one lead, and whether any slot is left."""

    max_buyers: int
    sales: list[Sale] = field(default_factory=list)

    @property
    def slots(self) -> int:
        return self.max_buyers - len(self.sales)

    @property
    def done(self) -> bool:
        return self.slots <= 0 or any(s.exclusive for s in self.sales)

    def add(self, sale: Sale) -> None:
        self.sales.append(sale)


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


class Router:
    def __init__(
        self,
        config: RuntimeConfig,
        transport: Transport,
        caps: CapStore,
        dedupe: DedupeStore,
        idempotency: IdempotencyStore,
        rotation: RotationStore | None = None,
        stats: BuyerStats | None = None,
        volume: VolumeStore | None = None,
        clock: Callable[[], float] = time.time,
        ledger: LedgerWriter | None = None,
    ) -> None:
        self.config = config
        self._idempotency = idempotency
        # The books fail closed: see records/guard.py.
        self.books = BooksGuard(ledger, on_booked=idempotency.remember) if ledger is not None else None
        self._transport = transport
        self._caps = caps
        self._dedupe = dedupe
        self._rotation = rotation if rotation is not None else MemoryRotationStore()
        self._stats = stats if stats is not None else MemoryBuyerStats()
        self._volume = volume if volume is not None else MemoryVolumeStore()
        self.breakers = Breakers()
        self._clock = clock
        self._offers: dict[str, _Offers] = {}

    async def route(self, req: LeadRequest) -> RoutingResult:
        """Route one lead; raises LeadInvalid (bad request) or NotFound (unknown flow / source)."""
        # One configuration for the whole lead, even if a new version goes live meanwhile.
        config = self.config
        problems = []
        if req.lead_id and not _LEAD_ID.match(req.lead_id):
            problems.append("lead_id: 1-128 characters of letters, digits and . _ : -")
        if not req.flow:
            problems.append("flow: required")
        if not req.source_id:
            problems.append("source_id: required")
        lead: Lead | None = None
        try:
            lead = config.schema.validate(req.fields)
        except LeadInvalid as exc:
            problems.extend(exc.problems)
        if problems or lead is None:
            raise LeadInvalid(problems)
        flow = config.flows.get(req.flow)
        if flow is None:
            raise NotFound(f"flow {req.flow!r} is not configured")
        source = config.sources.get(req.source_id)
        if source is None:
            raise NotFound(f"source {req.source_id!r} is not configured")
        if flow.sources is not None and source.id not in flow.sources:
            raise NotFound(f"source {source.id!r} does not sell into flow {flow.id!r}")
        lead_id = req.lead_id or uuid.uuid4().hex
        budget = flow.deadline_s
        if req.caller_budget_s is not None:
            # Kept back for the answer's way home: 10 % of the caller's time, at least REPLY_MARGIN_S.
            margin = max(REPLY_MARGIN_S, req.caller_budget_s * 0.1)
            budget = max(0.0, min(budget, req.caller_budget_s - margin))
        validated = lead
        if self.books is not None and (held := await self.books.answer(lead_id)) is not None:
            # Routed by an earlier call whose answer waited for the books: that answer, never a new route.
            return dataclasses.replace(held, replayed=True)
        # Every hot-state call made for this lead is bounded by its deadline.
        lead_deadline.set(time.monotonic() + budget)
        return await self._idempotency.once(
            lead_id, lambda: self._route(lead_id, flow, source, validated, req.test, budget, config)
        )

    async def _route(
        self,
        lead_id: str,
        flow: Flow,
        source: Source,
        lead: Lead,
        test: bool,
        budget_s: float,
        config: RuntimeConfig,
    ) -> RoutingResult:
        if self.books is not None:
            self.books.check()  # before any buyer is asked
        started = time.monotonic()
        received_at = self._clock()
        deadline = started + budget_s
        with tracer.start_as_current_span(
            "RouteLead",
            kind=trace.SpanKind.SERVER,
            attributes={"lead.id": lead_id, "flow": flow.id, "source": source.id, "test": test},
        ) as span:
            result = RoutingResult(lead_id, flow.id, source.id, test, Outcome.UNSOLD, ZERO)
            result.config_version = config.version
            result.trace_id = format(span.get_span_context().trace_id, "032x")
            identity = self._identity(flow, lead)
            if identity and flow.dedupe_ttl_s and await self._seen_in_flow(flow, identity, test):
                result.outcome = Outcome.DUPLICATE
            else:
                epoch = self._clock()
                now = datetime.fromtimestamp(epoch, UTC)
                subject = f"source:{source.id}"
                counted = source.pricing.book.uses_volume
                counts = _counts("source", await self._volume.counts(subject, epoch)) if counted else {}
                facts = Facts(lead.fields, config.schema.lead_age_s(lead, now), now, counts)
                # Known before any buyer is asked: the fixed part of the cost, so margin protection
                # can turn it into a floor.
                fixed_cost = source.pricing.fixed_cost(facts) + flow.fee
                if counted and not test:
                    await self._volume.add(subject, epoch)
                # The ping window leaves time to post; on a short budget, at least 60 % goes to pings.
                ping_end = started + max(budget_s - flow.post_reserve_s, budget_s * 0.6)
                margin_floor = (
                    source.pricing.margin_floor(fixed_cost - flow.fee, flow.fee, flow.min_margin)
                    if flow.min_margin is not None
                    else None
                )
                self._offers[lead_id] = _Offers(
                    lambda price: to_cents(source.pricing.cost(fixed_cost, price))
                )
                try:
                    await self._auction(result, flow, lead, facts, identity, ping_end, deadline, margin_floor)
                except AlreadyOffered:
                    # Another call (any process, any replica) offered or answered this lead_id.
                    return await self._books_answer(lead_id)
                finally:
                    del self._offers[lead_id]
                self._book(result, source, fixed_cost)
            result.elapsed_ms = (time.monotonic() - started) * 1000
            span.set_attribute("outcome", result.outcome.value)
            span.set_attribute("revenue", fmt(result.revenue))
            span.set_attribute("cost", fmt(result.cost))
            span.set_attribute("margin", fmt(result.margin))
            span.set_attribute("latency_ms", round(result.elapsed_ms, 3))
            _log_decision(result, config.version)  # inside the span: the line carries its ids
            if self.books is not None:
                # Before the answer: a lead the caller hears about is already on the books.
                with ledger_span("lead", lead_id, outcome=result.outcome.value):
                    booked = await self.books.record(result, lead.ping_fields, received_at, config.version)
                if not booked:
                    # Answered or offered by an earlier call: the books' answer, not this one.
                    return await self._books_answer(lead_id)
        record_lead(result, budget_s)
        return result

    async def _books_answer(self, lead_id: str) -> RoutingResult:
        assert self.books is not None
        earlier = await self.books.books_answer(lead_id)
        if earlier is None:
            raise LeadInFlight(f"lead {lead_id} is being routed by another call; retry later")
        log.info("lead.answered_from_books", lead_id=lead_id, outcome=earlier.outcome.value)
        return dataclasses.replace(earlier, replayed=True)

    async def _intend(
        self,
        a: Attempt,
        result: RoutingResult,
        r: Reservation | None,
        price: Decimal,
        exclusive: bool,
        wait_s: float,
    ) -> None:
        """Commit this post's intent before it leaves. Raises AlreadyOffered (another call has the
        lead: post nothing) or BooksUnavailable (the books did not take it: not posted)."""
        assert self.books is not None
        claim = self._offers[result.lead_id]
        if claim.failed:
            raise BooksUnavailable(claim.failed)
        intent = Intent(
            result.lead_id,
            0,
            a.buyer_id,
            r.id if r is not None else "",
            price,
            claim.cost(price),
            exclusive,
            a.tier,
            result.flow,
            result.source_id,
            result.config_version,
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
                raise AlreadyOffered(result.lead_id)
            return
        # A later post of the lead (a shared sale, or the next bid after a rejection).
        if not await asyncio.shield(claim.first):
            raise AlreadyOffered(result.lead_id)
        claim.seq += 1
        await self.books.offer(dataclasses.replace(intent, seq=claim.seq), wait_s)

    def _book(self, result: RoutingResult, source: Source, fixed_cost: Decimal) -> None:
        """Cost (fixed part plus any revenue share), rounded once; each sale gets its cost share."""
        prices = [s.price for s in result.sales]
        owed = result.sales or source.pay_on == "accepted"
        cost = source.pricing.cost(fixed_cost, sum(prices, Decimal(0))) if owed else Decimal(0)
        booked = book(cost, prices)
        result.cost = booked.cost
        result.sales = [
            dataclasses.replace(s, cost=c) for s, c in zip(result.sales, booked.sale_costs, strict=True)
        ]

    async def _auction(
        self,
        result: RoutingResult,
        flow: Flow,
        lead: Lead,
        facts: Facts,
        identity: str,
        ping_end: float,
        deadline: float,
        margin_floor: Decimal | None,
    ) -> None:
        """Walk the ping tree: tiers top-down, each sold as an auction or a waterfall."""
        now = facts.now or datetime.now(UTC)
        tiers = [
            await self._eligible(result, flow, t, tier, facts, identity, now)
            for t, tier in enumerate(flow.tiers)
        ]
        if flow.ping_strategy == "all_at_once":
            await self._ping_all([x for _, live in tiers for x in live], lead, result.lead_id, ping_end)
        sale = _Sale(flow.max_buyers)
        for tier, live in tiers:
            if sale.done:
                break
            floors = flow.floors.for_tier(tier.floor, facts, now)
            if margin_floor is not None:
                floors = Floors(max(floors.shared, margin_floor), floors.exclusive)
            if tier.mode == "auction":
                await self._ping_all(live, lead, result.lead_id, ping_end)  # no-op for the pinged
                offers = self._acceptable(live, flow, tier, floors, facts)
                await self._sell_auction(offers, flow, lead, result, sale, deadline)
            else:
                await self._sell_waterfall(live, flow, floors, facts, lead, result, sale, ping_end, deadline)
        result.sales.extend(sale.sales)
        if sale.sales:
            result.outcome = Outcome.SOLD
            await self._remember_buyers(sale.sales, identity, result.test)
        winners = {s.buyer_id for s in sale.sales}
        for _, live in tiers:
            for x in live:
                _explain_loser(x.attempt, winners, sale.sales)

    async def _eligible(
        self,
        result: RoutingResult,
        flow: Flow,
        t: int,
        tier: Tier,
        facts: Facts,
        identity: str,
        now: datetime,
    ) -> tuple[Tier, list[_Live]]:
        """Every buyer of the tier gets an attempt, in tier order; those still BID are in play."""
        members = list(tier.buyers)
        if tier.rotates:
            turn = await self._rotation.next_turn(f"{flow.id}/{tier.name}")
            members = [members[i] for i in rotation(len(members), turn, tier.sequence)]
        live: list[_Live] = []
        epoch = self._clock()
        for order, buyer in enumerate(members):
            a = Attempt(buyer.id, tier.name, Status.BID)
            result.attempts.append(a)
            if buyer.schedule is not None and (closed := buyer.schedule.closed_reason(now)):
                a.status, a.reason = Status.SKIPPED_SCHEDULE, closed
            elif (why := buyer.filter.failure(facts)) is not None:
                a.status, a.reason = Status.SKIPPED_FILTER, f"filter: {why}"
            elif buyer.capped and not self._caps.has_room(
                buyer.caps, epoch, buyer.fixed_price, (f"flow={flow.id}", f"source={result.source_id}")
            ):
                a.status = Status.SKIPPED_CAP
                a.reason = (
                    f"cap reached: {describe(buyer.caps)}"
                    if self._caps.healthy
                    else "cap state unavailable: not sold to while its counters are unknown"
                )
            elif identity and buyer.dedupe_ttl_s and (why := await self._seen_by_buyer(buyer, identity)):
                a.status, a.reason = Status.DUPLICATE_FOR_BUYER, why
            elif buyer.breaker_failures and (
                tripped := self.breakers.get(
                    buyer.id, buyer.breaker_failures, buyer.breaker_cooldown_s
                ).allow(time.monotonic())
            ):
                a.status, a.reason = Status.SKIPPED_CIRCUIT, tripped
            else:
                if buyer.fixed_price is not None:
                    a.price = a.offered = buyer.fixed_price
                    a.reason = "fixed-price buyer: direct post, no ping"
                x = _Live(buyer, a, t, order, pinged=buyer.ping is None)
                if buyer.pricing.uses_volume:
                    x.counts = _counts("buyer", await self._volume.counts(f"buyer:{buyer.id}", epoch))
                live.append(x)
        if tier.mode == "waterfall":
            # Offered one at a time, before any bid is known: by priority, or by fixed price.
            if tier.order == "priority":
                live.sort(key=lambda x: -x.buyer.priority)
            elif tier.order == "bid":
                live.sort(key=lambda x: -(x.buyer.fixed_price or Decimal(0)))
        return tier, live

    def _acceptable(
        self, live: list[_Live], flow: Flow, tier: Tier, floors: Floors, facts: Facts
    ) -> list[_Live]:
        """Bids that clear conditions and floors, in this tier's offer order."""
        ok = [x for x in live if x.attempt.status is Status.BID and self._clears(x, flow, floors, facts)]
        if not ok:
            return []
        top = max(x.attempt.price or Decimal(0) for x in ok)
        for x in ok:
            x.value = value(
                flow.ranking,
                x.attempt.price or Decimal(0),
                self._stats.accept_rate(x.buyer.id),
                x.buyer.payment_days,
                top,
                flow.score_weights,
            )
        if tier.order == "bid":
            ok.sort(key=lambda x: (-x.value, -x.buyer.priority, x.order))
        elif tier.order == "priority":
            ok.sort(key=lambda x: (-x.buyer.priority, -x.value, x.order))
        return ok  # round-robin and weighted: already in rotation order

    def _clears(self, x: _Live, flow: Flow, floors: Floors, facts: Facts) -> bool:
        a = x.attempt
        verdict = check_conditions(x.conditions, facts, flow.consent_field)
        if verdict.failure is not None:
            a.status, a.reason = Status.CONDITION_FAILED, verdict.failure
            return False
        a.exclusive = a.exclusive or verdict.exclusive
        exclusive = a.exclusive or flow.max_buyers == 1
        if x.buyer.pricing.rules:
            priced = dataclasses.replace(facts, counts=x.counts, exclusive=exclusive)
            a.price = x.buyer.pricing.apply(a.price or Decimal(0), priced)
        floor = floors.for_bid(exclusive)
        price = a.price or Decimal(0)
        if price < floor or price <= 0:
            kind = "exclusive floor" if floor > floors.shared else "floor"
            a.status, a.reason = Status.BELOW_FLOOR, f"bid {fmt(price)} is below the {kind} {fmt(floor)}"
            return False
        return True

    async def _sell_auction(
        self, offers: list[_Live], flow: Flow, lead: Lead, result: RoutingResult, sale: _Sale, deadline: float
    ) -> None:
        """Post to the best allocation; a rejection frees its slot for the next bid while time remains."""
        remaining = list(offers)
        while remaining and not sale.done and time.monotonic() < deadline - MIN_POST_S:
            pick = allocate(
                [
                    Offer(x.buyer.id, x.attempt.price or Decimal(0), x.value, x.attempt.exclusive)
                    for x in remaining
                ],
                sale.slots,
                shared_only=bool(sale.sales),
            )
            if not pick:
                break
            chosen = [x for x in remaining if x.buyer.id in {o.key for o in pick}]
            exclusive = len(chosen) == 1 and (chosen[0].attempt.exclusive or flow.max_buyers == 1)
            remaining = [x for x in remaining if x not in chosen]
            sold = await asyncio.gather(*(self._offer(x, lead, result, deadline, exclusive) for x in chosen))
            for got in sold:
                if got is not None:
                    sale.add(got)

    async def _sell_waterfall(
        self,
        live: list[_Live],
        flow: Flow,
        floors: Floors,
        facts: Facts,
        lead: Lead,
        result: RoutingResult,
        sale: _Sale,
        ping_end: float,
        deadline: float,
    ) -> None:
        """Offer one buyer at a time in tier order (pinging it first if not yet asked)."""
        for x in live:
            if sale.done or time.monotonic() >= deadline - MIN_POST_S:
                break
            if not x.pinged:
                await self._ping_all([x], lead, result.lead_id, ping_end)
            if x.attempt.status is not Status.BID or not self._clears(x, flow, floors, facts):
                continue
            if sale.sales and x.attempt.exclusive:
                continue  # a shared sale exists: an exclusive bid cannot join it
            got = await self._offer(x, lead, result, deadline, x.attempt.exclusive or flow.max_buyers == 1)
            if got is not None:
                sale.add(got)

    async def _remember_buyers(self, sales: list[Sale], identity: str, test: bool) -> None:
        """Per-buyer dedupe: this buyer has now bought this consumer."""
        if not identity or test:
            return
        for s in sales:
            b = self.config.buyers.get(s.buyer_id)
            if b is not None and b.dedupe_ttl_s:
                try:
                    await self._dedupe.seen_or_add(f"buyer|{b.id}|{identity}", b.dedupe_ttl_s, add=True)
                except StateUnavailable as exc:
                    log.warning("dedupe.unrecorded", buyer=b.id, error=str(exc))

    async def _ping_all(self, live: list[_Live], lead: Lead, lead_id: str, ping_end: float) -> None:
        todo = [x for x in live if not x.pinged and x.attempt.status is Status.BID]
        if not todo:
            return
        for x in todo:
            x.pinged = True
        tasks = [asyncio.create_task(self._ping(x, lead, lead_id, ping_end)) for x in todo]
        # Each ping bounds itself; this outer wait is the belt to those braces.
        _, late = await asyncio.wait(tasks, timeout=max(0.0, ping_end - time.monotonic()) + _SAFETY_S)
        for task in late:
            task.cancel()
        for x, task in zip(todo, tasks, strict=True):
            if task in late:
                x.attempt.status = Status.TIMED_OUT
                x.attempt.reason = "no answer before the ping window closed"

    async def _ping(self, x: _Live, lead: Lead, lead_id: str, deadline: float) -> None:
        buyer, a = x.buyer, x.attempt
        assert buyer.ping is not None and buyer.ping_parser is not None
        timeout = min(buyer.ping.timeout_s, deadline - time.monotonic())
        request = buyer.ping.request(lead.ping_fields, Transaction(lead_id))
        with _buyer_span("ping", buyer, a.tier) as span:
            if buyer.trace_context:
                request = with_traceparent(request)
            t0 = time.perf_counter()
            try:
                answer = await self._transport.send(request, timeout, buyer.ping_max_body)
            except TransportTimeout as exc:
                a.status, a.reason = Status.TIMED_OUT, f"ping timed out: {exc}"
            except TransportError as exc:
                a.status, a.reason = Status.ERROR, f"ping failed: {exc}"
            else:
                a.http_status = answer.status
                try:
                    parsed = buyer.ping_parser.parse(answer)
                except BadAnswer as exc:
                    a.status, a.reason = Status.ERROR, f"bad answer: {exc}"
                else:
                    if parsed.bid:
                        a.price, a.ping_id, a.exclusive = parsed.price, parsed.ping_id, parsed.exclusive
                        a.offered = parsed.price
                        a.carried = parsed.carried
                        x.conditions = parsed.conditions
                        a.reason = _scrub_secrets(parsed.reason, buyer) or "bid"
                    else:
                        a.status, a.reason = Status.NO_BID, _scrub_secrets(parsed.reason, buyer) or "no bid"
            a.ping_ms = (time.perf_counter() - t0) * 1000
            _span_result(span, a, a.ping_ms)
        self._health(buyer, ok=a.status not in (Status.TIMED_OUT, Status.ERROR))

    async def _offer(
        self, x: _Live, lead: Lead, result: RoutingResult, deadline: float, exclusive: bool
    ) -> Sale | None:
        """Post the lead to one bidder; a Sale when it accepts, None to move to the next bid."""
        buyer, a = x.buyer, x.attempt
        assert a.price is not None
        price = to_cents(a.price)
        if result.test:
            a.reason = f"selected at {fmt(price)}; test lead, not posted"
            return Sale(buyer.id, price, "", exclusive, a.tier)
        remaining = deadline - time.monotonic()
        if remaining < MIN_POST_S:
            return None  # the attempt stays BID and is explained as NOT_OFFERED
        # Every post is reserved first, capped buyer or not: the reservation marks "posting now",
        # so a process killed before it settles leaves an orphan to reconcile, and the commit
        # appends the sale to the books' outbox in the same atomic step (Redis).
        reservation: Reservation | None = None
        scopes = (f"flow={result.flow}", f"source={result.source_id}")
        try:
            reservation = await self._caps.reserve(buyer.caps, result.lead_id, self._clock(), price, scopes)
        except StateUnavailable:
            if buyer.capped:
                a.status, a.reason = Status.SKIPPED_CAP, "cap state unavailable: not sold to while unknown"
                return None
            # Uncapped buyers still sell while Redis is down; the ledger write before the answer books it.
        else:
            if reservation is None:
                a.status, a.reason = Status.SKIPPED_CAP, "cap, budget or balance reached before the post"
                return None
        if self.books is not None and self.books.intents is not None:
            # No post leaves without its intent on the books (`records/intents.py`).
            try:
                await self._intend(a, result, reservation, price, exclusive, remaining - MIN_POST_S)
            except (AlreadyOffered, BooksUnavailable) as exc:
                if reservation is not None:
                    await self._caps.release(reservation)
                if isinstance(exc, AlreadyOffered):
                    raise
                a.status, a.reason = Status.NOT_OFFERED, f"not posted: {exc}"
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                remaining = MIN_POST_S
        request = buyer.post.request(
            lead.fields, Transaction(result.lead_id, a.ping_id, fmt(price), a.carried)
        )
        with _buyer_span("post", buyer, a.tier) as span:
            if buyer.trace_context:
                request = with_traceparent(request)
            t0 = time.perf_counter()
            try:
                answer = await self._transport.send(
                    request, min(buyer.post.timeout_s, remaining), buyer.post_max_body
                )
                a.http_status = answer.status
                parsed = buyer.post_parser.parse(answer)
                # Known now, so the post span's status says it (reasons are added below).
                a.status = Status.POST_ACCEPTED if parsed.accepted else Status.POST_REJECTED
            except TransportError as exc:
                self._health(buyer, ok=False)
                a.status, a.reason = Status.POST_ERROR, f"post failed: {exc}"
                await self._unknown_or_release(reservation, exc.delivered_maybe, a)
                return None
            except BadAnswer as exc:
                self._health(buyer, ok=False)
                a.status, a.reason = Status.POST_ERROR, f"bad post answer: {exc}"
                await self._unknown_or_release(reservation, True, a)
                return None
            finally:
                a.post_ms = (time.perf_counter() - t0) * 1000
                _span_result(span, a, a.post_ms)
        self._stats.record_post(buyer.id, parsed.accepted)
        if not parsed.accepted:
            why = _scrub_secrets(_redact(parsed.reason, lead), buyer) or "no reason given"
            a.status, a.reason = Status.POST_REJECTED, f"post rejected: {why}"
            if reservation is not None:
                await self._caps.release(reservation)
            return None
        if parsed.price is not None and parsed.price != price:
            # The buyer's post answer states what it pays: that is the revenue (seed 003).
            price = to_cents(parsed.price)
            a.price = price
        if reservation is not None:
            sale = SaleRecord(
                result.lead_id,
                buyer.id,
                price,
                parsed.buyer_lead_id,
                exclusive,
                a.tier,
                "sold",
                self._clock(),
                result.flow,
                result.source_id,
                result.test,
                result.config_version,
            )
            await self._caps.commit(reservation, encode(sale), plan.to_cents(price))
        if buyer.pricing.uses_volume:
            await self._volume.add(f"buyer:{buyer.id}", self._clock())
        a.status, a.reason = (
            Status.POST_ACCEPTED,
            f"sold at {fmt(price)}"
            + (f": {_scrub_secrets(_redact(parsed.reason, lead), buyer)}" if parsed.reason else ""),
        )
        return Sale(buyer.id, price, parsed.buyer_lead_id, exclusive, a.tier)

    def _health(self, buyer: Buyer, *, ok: bool) -> None:
        if buyer.breaker_failures:
            breaker = self.breakers.get(buyer.id, buyer.breaker_failures, buyer.breaker_cooldown_s)
            breaker.record(ok, time.monotonic())

    def _identity(self, flow: Flow, lead: Lead) -> str:
        """A keyed digest of the consumer's normalised identity fields: dedupe keys hold no PII."""
        if not flow.dedupe_fields:
            return ""
        fields = self.config.schema.fields
        values = [
            normalise(fields[n].type if n in fields else "string", lead.fields.get(n, ""))
            for n in flow.dedupe_fields
        ]
        return self._dedupe.fingerprint(values) if any(values) else ""

    async def _seen_in_flow(self, flow: Flow, identity: str, test: bool) -> bool:
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

    async def _unknown_or_release(self, r: Reservation | None, delivered_maybe: bool, a: Attempt) -> None:
        if delivered_maybe:
            # The buyer may have taken it: the cap slot stays used until someone settles it.
            a.reason += "; outcome unknown, held against the cap until settled"
            a.unsettled = True
            if r is not None:
                await self._caps.unsettled(r, a.reason)
        elif r is not None:
            await self._caps.release(r)


def _scrub_secrets(text: str, buyer: Buyer) -> str:
    """A buyer echoing its own API key (or our token for it) gets it masked, like PII."""
    if not text:
        return text
    for secret in buyer.secret_values:
        if secret in text:
            text = text.replace(secret, "[secret]")
    return text


def _redact(text: str, lead: Lead) -> str:
    """A buyer that has the full lead may echo it in its answer: take the lead's own PII out."""
    for pii in lead.pii_values:
        if pii.lower() in text.lower():
            text = re.sub(re.escape(pii), "[redacted]", text, flags=re.IGNORECASE)
    return text


def _counts(kind: str, by_period: dict[str, int]) -> dict[str, int]:
    return {f"{kind}:{period}": n for period, n in by_period.items()}


def _explain_loser(a: Attempt, winners: set[str], sales: list[Sale]) -> None:
    """An acceptable bid that did not sell: someone else won, or time ran out."""
    if a.status is not Status.BID or a.buyer_id in winners:
        return
    if not sales:
        a.status = Status.NOT_OFFERED
        a.reason = "acceptable, but the deadline ran out before it could be offered"
        return
    a.status = Status.OUTBID
    names = ", ".join(f"{s.buyer_id} at {fmt(s.price)}" for s in sales)
    tiers = {s.tier for s in sales}
    if a.tier not in tiers:
        a.reason = f"not needed: sold in tier {sorted(tiers)[0]!r} to {names}"
    elif a.price is None:
        a.reason = f"not asked: sold to {names} first"
    elif len(sales) == 1 and sales[0].exclusive:
        a.reason = f"outbid: sold exclusively to {names}"
    else:
        a.reason = f"outbid: sold to {names}"


def _buyer_span(name: str, buyer: Buyer, tier: str) -> AbstractContextManager[trace.Span]:
    """A CLIENT span per ping or post. Made current only when the buyer takes our trace context
    (with_traceparent reads the current span); otherwise start_span skips the context attach and
    detach, about a third of a span's cost (benchmarks/README.md)."""
    attributes = {"buyer.id": buyer.id, "tier": tier}
    if buyer.trace_context:
        return tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes)
    return tracer.start_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes)


def _span_result(span: trace.Span, a: Attempt, ms: float) -> None:
    # One set_attributes call: the SDK takes its lock and validates once, not once per attribute.
    attrs: dict[str, str | float | int] = {"status": a.status.value, "latency_ms": round(ms, 3)}
    if a.http_status:
        attrs["http.status_code"] = a.http_status
    if a.price is not None:
        attrs["price"] = fmt(a.price)
    span.set_attributes(attrs)


def _log_decision(r: RoutingResult, version: str) -> None:
    """The one line per lead that says which buyer got it and why the others did not (no PII)."""
    log.info(
        "lead.routed",
        lead_id=r.lead_id,
        flow=r.flow,
        source=r.source_id,
        outcome=r.outcome.value,
        test=r.test,
        replayed=r.replayed,
        buyers=[s.buyer_id for s in r.sales],
        cost=fmt(r.cost),
        revenue=fmt(r.revenue),
        margin=fmt(r.margin),
        negative_margin=r.negative_margin,
        elapsed_ms=round(r.elapsed_ms, 2),
        trace_id=r.trace_id,
        config_version=version,
        attempts=[
            {
                "buyer": a.buyer_id,
                "status": a.status.value,
                "price": fmt(a.price) if a.price is not None else None,
            }
            for a in r.attempts
        ],
    )


__all__ = ["LeadInvalid", "LeadRequest", "NotFound", "Router"]
