"""One lead, top to bottom: validate → dedupe → eligible buyers → ping → rank → reserve → post → settle."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog
from opentelemetry import trace

from routelead.buyers.base import BadAnswer
from routelead.config.runtime import Buyer, Flow, RuntimeConfig, Source
from routelead.domain.auction import Candidate, mark_losers, rank
from routelead.domain.lead import Lead, LeadInvalid
from routelead.domain.mapping import Transaction
from routelead.domain.money import ZERO, fmt, to_cents
from routelead.domain.outcome import Attempt, Outcome, RoutingResult, Sale, Status
from routelead.records.port import LedgerWriter
from routelead.state.ports import CapStore, DedupeStore, IdempotencyStore, Reservation
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


class Router:
    def __init__(
        self,
        config: RuntimeConfig,
        transport: Transport,
        caps: CapStore,
        dedupe: DedupeStore,
        idempotency: IdempotencyStore,
        clock: Callable[[], float] = time.time,
        ledger: LedgerWriter | None = None,
    ) -> None:
        self.config = config
        self._ledger = ledger
        self._transport = transport
        self._caps = caps
        self._dedupe = dedupe
        self._idempotency = idempotency
        self._clock = clock

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
            budget = max(0.0, min(budget, req.caller_budget_s - REPLY_MARGIN_S))
        validated = lead
        return await self._idempotency.once(
            lead_id, lambda: self._route(lead_id, flow, source, validated, req.test, budget, config.version)
        )

    async def _route(
        self,
        lead_id: str,
        flow: Flow,
        source: Source,
        lead: Lead,
        test: bool,
        budget_s: float,
        version: str,
    ) -> RoutingResult:
        started = time.monotonic()
        received_at = self._clock()
        deadline = started + budget_s
        with tracer.start_as_current_span(
            "RouteLead",
            attributes={"lead.id": lead_id, "flow": flow.id, "source": source.id, "test": test},
        ) as span:
            result = RoutingResult(lead_id, flow.id, source.id, test, Outcome.UNSOLD, ZERO)
            result.trace_id = format(span.get_span_context().trace_id, "032x")
            identity = _identity(flow, lead)
            if (
                identity
                and flow.dedupe_ttl_s
                and await self._dedupe.seen_or_add(
                    f"lead|{flow.id}|{identity}", flow.dedupe_ttl_s, add=not test
                )
            ):
                result.outcome = Outcome.DUPLICATE
            else:
                # The ping window leaves time to post; on a short budget, at least 60 % goes to pings.
                ping_end = started + max(budget_s - flow.post_reserve_s, budget_s * 0.6)
                await self._auction(result, flow, lead, identity, ping_end, deadline)
                if result.sales or source.pay_on == "accepted":
                    result.cost = source.cost
            result.elapsed_ms = (time.monotonic() - started) * 1000
            span.set_attribute("outcome", result.outcome.value)
            span.set_attribute("revenue", fmt(result.revenue))
        _log_decision(result, version)
        if self._ledger is not None:
            # Before the answer: a lead the caller hears about is already on the books.
            await self._ledger.record(result, lead.ping_fields, received_at, version)
        return result

    async def _auction(
        self, result: RoutingResult, flow: Flow, lead: Lead, identity: str, ping_end: float, deadline: float
    ) -> None:
        live = await self._eligible(result, flow, identity)
        pinged = [x for x in live if x.buyer.ping is not None]
        if pinged:
            await self._ping_all(pinged, lead, result.lead_id, ping_end)
        candidates = [
            Candidate(x.attempt, x.tier_index, x.buyer.priority, x.order)
            for x in live
            if x.attempt.status is Status.BID
        ]
        offers = rank(candidates, flow.floor)
        buyers = {x.buyer.id: x.buyer for x in live}
        for c in offers:
            sale = await self._offer(buyers[c.attempt.buyer_id], c.attempt, lead, result, deadline)
            if sale is not None:
                result.sales.append(sale)
                result.outcome = Outcome.SOLD
                if identity and not result.test and buyers[sale.buyer_id].dedupe_ttl_s:
                    b = buyers[sale.buyer_id]
                    await self._dedupe.seen_or_add(f"buyer|{b.id}|{identity}", b.dedupe_ttl_s, add=True)
                break
        winner = next((a for a in result.attempts if a.status is Status.POST_ACCEPTED), None)
        if winner is None and result.test and result.sales:
            winner = next(a for a in result.attempts if a.buyer_id == result.sales[0].buyer_id)
        mark_losers(offers, winner)

    async def _eligible(self, result: RoutingResult, flow: Flow, identity: str) -> list[_Live]:
        """Every buyer in the tree gets an attempt; those still BID after this are in play."""
        live: list[_Live] = []
        now = self._clock()
        order = 0
        for t, tier in enumerate(flow.tiers):
            for buyer in tier.buyers:
                attempt = Attempt(buyer.id, tier.name, Status.BID)
                result.attempts.append(attempt)
                order += 1
                if buyer.capped and not self._caps.has_room(buyer.caps, now):
                    attempt.status = Status.SKIPPED_CAP
                    attempt.reason = "cap reached: " + ", ".join(f"{n}/{p}" for p, n in buyer.caps.limits)
                    continue
                if (
                    identity
                    and buyer.dedupe_ttl_s
                    and await self._dedupe.seen_or_add(
                        f"buyer|{buyer.id}|{identity}", buyer.dedupe_ttl_s, add=False
                    )
                ):
                    attempt.status = Status.DUPLICATE_FOR_BUYER
                    attempt.reason = (
                        f"this buyer bought the same consumer within {buyer.dedupe_ttl_s / 86400:.0f} days"
                    )
                    continue
                if buyer.fixed_price is not None:
                    attempt.price = buyer.fixed_price
                    attempt.reason = "fixed-price buyer: direct post, no ping"
                live.append(_Live(buyer, attempt, t, order))
        return live

    async def _ping_all(self, pinged: list[_Live], lead: Lead, lead_id: str, deadline: float) -> None:
        tasks = [asyncio.create_task(self._ping(x.buyer, x.attempt, lead, lead_id, deadline)) for x in pinged]
        # Each ping bounds itself; this outer wait is the belt to those braces.
        _, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()) + _SAFETY_S)
        for task in late:
            task.cancel()
        for x, task in zip(pinged, tasks, strict=True):
            if task in late:
                x.attempt.status = Status.TIMED_OUT
                x.attempt.reason = "no answer before the ping window closed"

    async def _ping(self, buyer: Buyer, a: Attempt, lead: Lead, lead_id: str, deadline: float) -> None:
        assert buyer.ping is not None and buyer.ping_parser is not None
        timeout = min(buyer.ping.timeout_s, deadline - time.monotonic())
        request = buyer.ping.request(lead.ping_fields, Transaction(lead_id))
        with tracer.start_as_current_span("ping", attributes={"buyer.id": buyer.id, "tier": a.tier}) as span:
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
                        a.reason = parsed.reason or "bid"
                    else:
                        a.status, a.reason = Status.NO_BID, parsed.reason or "no bid"
            a.ping_ms = (time.perf_counter() - t0) * 1000
            _span_result(span, a, a.ping_ms)

    async def _offer(
        self, buyer: Buyer, a: Attempt, lead: Lead, result: RoutingResult, deadline: float
    ) -> Sale | None:
        """Post the lead to one bidder; a Sale when it accepts, None to move to the next bid."""
        assert a.price is not None
        price = to_cents(a.price)
        if result.test:
            a.reason = f"selected at {fmt(price)}; test lead, not posted"
            return Sale(buyer.id, price, "", a.exclusive, a.tier)
        remaining = deadline - time.monotonic()
        if remaining < MIN_POST_S:
            return None  # mark_losers says NOT_OFFERED
        reservation: Reservation | None = None
        if buyer.capped:
            reservation = await self._caps.reserve(buyer.caps, result.lead_id, self._clock())
            if reservation is None:
                a.status, a.reason = Status.SKIPPED_CAP, "cap reached before the post"
                return None
        request = buyer.post.request(lead.fields, Transaction(result.lead_id, a.ping_id, fmt(price)))
        with tracer.start_as_current_span("post", attributes={"buyer.id": buyer.id, "tier": a.tier}) as span:
            t0 = time.perf_counter()
            try:
                answer = await self._transport.send(
                    request, min(buyer.post.timeout_s, remaining), buyer.post_max_body
                )
                a.http_status = answer.status
                parsed = buyer.post_parser.parse(answer)
            except TransportError as exc:
                a.status, a.reason = Status.POST_ERROR, f"post failed: {exc}"
                await self._unknown_or_release(reservation, exc.delivered_maybe, a)
                return None
            except BadAnswer as exc:
                a.status, a.reason = Status.POST_ERROR, f"bad post answer: {exc}"
                await self._unknown_or_release(reservation, True, a)
                return None
            finally:
                a.post_ms = (time.perf_counter() - t0) * 1000
                _span_result(span, a, a.post_ms)
        if not parsed.accepted:
            a.status, a.reason = Status.POST_REJECTED, f"post rejected: {parsed.reason or 'no reason given'}"
            if reservation is not None:
                await self._caps.release(reservation)
            return None
        if reservation is not None:
            await self._caps.commit(reservation)
        a.status, a.reason = (
            Status.POST_ACCEPTED,
            f"sold at {fmt(price)}" + (f": {parsed.reason}" if parsed.reason else ""),
        )
        return Sale(buyer.id, price, parsed.buyer_lead_id, a.exclusive, a.tier)

    async def _unknown_or_release(self, r: Reservation | None, delivered_maybe: bool, a: Attempt) -> None:
        if delivered_maybe:
            # The buyer may have taken it: the cap slot stays used until someone settles it.
            a.reason += "; outcome unknown, held against the cap until settled"
            a.unsettled = True
            if r is not None:
                await self._caps.unsettled(r, a.reason)
        elif r is not None:
            await self._caps.release(r)


def _identity(flow: Flow, lead: Lead) -> str:
    """A one-way digest of the consumer's identity fields: dedupe keys never hold PII."""
    if not flow.dedupe_fields:
        return ""
    values = [lead.fields.get(name, "") for name in flow.dedupe_fields]
    if not any(values):
        return ""
    return hashlib.blake2b("\x1f".join(values).encode(), digest_size=16).hexdigest()


def _span_result(span: trace.Span, a: Attempt, ms: float) -> None:
    span.set_attribute("status", a.status.value)
    span.set_attribute("latency_ms", round(ms, 3))
    if a.http_status:
        span.set_attribute("http.status_code", a.http_status)
    if a.price is not None:
        span.set_attribute("price", fmt(a.price))


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
