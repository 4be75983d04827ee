"""Inbound ping-post: Quote and Commit, the auction paused before its posts and resumed.

Quote: the supplier's ping fields (no PII) → its limits → the ping phase of the flow's auction
(domain/auction.py), driven live until the machine's first Post → the bids in that post back an
offer (domain/quote.py) → the paused auction (every seat and every buyer's ping answer) is kept in
the hot state until the quote expires, so a commit can land on any replica.

Commit: the full lead → it must agree with the quoted ping fields → the machine is rebuilt from the
kept quote, the ping answers replayed into it (as replay/engine.py does), and its posts driven live
exactly as a routed lead's: the lead_id is the quote id, so the idempotency store, the books'
intents and the ledger make a repeated commit answer from the first, on any replica. The lead's
cost is the quoted price (plus the flow's fee, as for every lead), owed per the source's pay_on.

Caps are reserved at commit, not at quote: a quote reserves nothing, and every post reserves
first, so a cap is never oversold however many quotes are open; a capped buyer at commit time is
skipped and the next bid that backed the quote is posted to. A commit posts only to the buyers
that bid for the quote, pays the source only the quoted price, and, on a single-buyer flow, never
falls back to a bid that would pay less than the quote, the fee and the minimum margin.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import structlog
from opentelemetry import trace

from routelead.buyer_calls import Routed
from routelead.config.runtime import RuntimeConfig
from routelead.domain.auction import (
    Auction,
    AuctionSpec,
    Bidder,
    Done,
    Ping,
    PingKind,
    PingReply,
    Post,
    Seat,
    TierSpec,
)
from routelead.domain.lead import Lead, LeadInvalid, LeadSchema
from routelead.domain.money import ZERO, fmt
from routelead.domain.outcome import Outcome, RoutingResult, Status
from routelead.domain.pricing import SourcePricing
from routelead.domain.quote import NoOffer, no_offer_reason, offer, ping_expiry
from routelead.domain.rules import Facts
from routelead.domain.tree import TierMode, TierOrder
from routelead.intake import seller
from routelead.records.quotes import QuoteOutcome, QuoteRecord, QuoteState
from routelead.router import LeadRequest, NotFound, Router, RouterParts
from routelead.state.quotes import MemoryQuoteLimiter, MemoryQuoteStore

log = structlog.get_logger("routelead.inbound")
tracer = trace.get_tracer("routelead")

# A quote is kept this long past its expiry, so a late commit hears "expired", not "unknown".
KEEP_AFTER_EXPIRY_S = 3600.0
_QUOTE_ID = re.compile(r"^q-[0-9a-f]{32}$")
# The quote a commit in this task resumes (read by _spec and _drive below).
_resuming: contextvars.ContextVar[Paused | None] = contextvars.ContextVar("resuming", default=None)


class QuoteRefused(RuntimeError):
    """The source does not quote (no `sources[].inbound`): gRPC FAILED_PRECONDITION."""


class QuoteLimited(RuntimeError):
    """A per-source quote limit: gRPC RESOURCE_EXHAUSTED with a retry-after hint."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QuoteUnknown(LookupError):
    """No such quote: gRPC NOT_FOUND."""


class QuoteExpired(RuntimeError):
    """The quote expired before its commit: gRPC FAILED_PRECONDITION."""


class QuoteMismatch(ValueError):
    """The committed lead differs from the quoted ping fields: gRPC FAILED_PRECONDITION."""


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    source_id: str
    flow: str
    fields: Mapping[str, str]
    caller_budget_s: float | None = None


@dataclass(frozen=True, slots=True)
class QuoteAnswer:
    quote_id: str
    flow: str
    source_id: str
    offered: bool
    price: Decimal | None
    # Epoch seconds: commit before this instant.
    expires_at: float
    reason: str
    config_version: str
    elapsed_ms: float


@dataclass(frozen=True, slots=True)
class _Reply:
    """One buyer's ping answer, and what the post must carry back from it."""

    reply: PingReply
    ping_id: str = ""
    carried: Mapping[str, str] = field(default_factory=dict)
    ping_ms: float = 0.0
    http_status: int = 0


@dataclass(frozen=True, slots=True)
class Paused:
    """A quote: the auction paused before its first post, as kept in the hot state."""

    id: str
    flow: str
    source_id: str
    config_version: str
    fields: Mapping[str, str]
    quoted_at: float
    lead_age_s: float
    expires_at: float
    price: Decimal
    fee: Decimal
    # The least a fallback bid must leave us (single-buyer flows): the quote's minimum margin.
    min_margin: Decimal
    tiers: tuple[TierSpec, ...]
    replies: Mapping[int, _Reply]


class Inbound(Router):
    """The router, plus Quote and Commit (a commit is routed as a lead whose auction resumes)."""

    def __init__(self, parts: RouterParts) -> None:
        super().__init__(parts)
        self._quotes = parts.quotes if parts.quotes is not None else MemoryQuoteStore(clock=parts.clock)
        self._limits = parts.quote_limits if parts.quote_limits is not None else MemoryQuoteLimiter()
        self._quote_books = parts.quote_books
        self._ping_schemas: dict[str, LeadSchema] = {}

    # --- Quote ------------------------------------------------------------------------------

    async def quote(self, req: QuoteRequest) -> QuoteAnswer:
        config = self.config
        flow_id, lead = self._quote_lead(req, config)
        flow = config.flows[flow_id]
        source = seller(config, flow, req.source_id)  # its cost for this flow's lead type
        terms = source.inbound
        if terms is None:
            raise QuoteRefused(
                f"source {source.id!r} does not quote: configure sources[].inbound (margin, ttl_s, limits)"
            )
        epoch = self._clock()
        if terms.limits.active:
            refused = await self._limits.admit(source.id, terms.limits, epoch)
            if refused is not None:
                ms = max(1, round(refused.retry_after_s * 1000))
                raise QuoteLimited(
                    f"source {source.id!r}: {refused.detail}; retry after {ms} ms", refused.retry_after_s
                )
        if self.books is not None:
            self.books.check()  # nothing is offered while the books refuse writes
        started = time.monotonic()
        budget = flow.deadline_s
        if req.caller_budget_s is not None:
            budget = max(0.0, min(budget, req.caller_budget_s * 0.9))
        quote_id = f"q-{uuid.uuid4().hex}"
        routed = Routed(quote_id, flow, source, lead, False, config)
        attributes = {"quote.id": quote_id, "flow": flow.id, "source": source.id}
        with tracer.start_as_current_span("Quote", kind=trace.SpanKind.SERVER, attributes=attributes):
            now = datetime.fromtimestamp(epoch, UTC)
            facts = Facts(lead.fields, config.schema_of(flow).lead_age_s(lead, now), now)
            # A quote has no consumer identity (its dedupe fields are PII): per-buyer duplicate
            # checks run at commit.
            tiers = tuple([await self._seating.tier(flow, t, facts, "", routed.scopes) for t in flow.tiers])
            spec = flow.auction(
                tiers,
                facts,
                now,
                ping_end=started + budget,
                deadline=started + budget,
                pricing=SourcePricing(ZERO),
                fixed_cost=flow.fee,
                pay_on=source.pay_on,
            )
            machine = Auction(spec, started)
            replies: dict[int, PingReply] = {}
            action = machine.action
            while isinstance(action, Ping):
                buyers, attempts = config.buyers, machine.attempts
                calls = [(i, buyers[attempts[i].buyer_id], attempts[i]) for i in action.seats]
                pinged = await self._calls.ping_all(routed, calls, action.until)
                # Kept for the commit as the machine reads them: no answer in time is timed out.
                late = PingReply("timed_out", "no answer before the ping window closed")
                replies.update({i: pinged.get(i, late) for i in action.seats})
                action = machine.send(time.monotonic(), pinged)
        min_margin = max(terms.margin.min_margin, flow.min_margin or ZERO)
        expires_at = epoch + terms.ttl_s
        if isinstance(action, Post):
            revenue = sum((o.price for o in action.orders), ZERO)
            got = offer(revenue, flow.fee, terms.margin, flow.min_margin)
            for o in action.orders:
                lasts = ping_expiry(replies[o.seat].conditions) if o.seat in replies else None
                if lasts is not None:
                    expires_at = min(expires_at, epoch + lasts)
        else:
            revenue, got = ZERO, NoOffer(no_offer_reason(machine.attempts))
        elapsed_ms = (time.monotonic() - started) * 1000
        if isinstance(got, NoOffer):
            answer = QuoteAnswer(
                quote_id, flow.id, source.id, False, None, epoch, got.reason, config.version, elapsed_ms
            )
            await self._book_quote(answer, epoch, "no_offer", revenue or None)
            log.info("quote.no_offer", quote_id=quote_id, flow=flow.id, source=source.id, reason=got.reason)
            return answer
        paused = Paused(
            quote_id,
            flow.id,
            source.id,
            config.version,
            dict(lead.ping_fields),
            epoch,
            facts.lead_age_s,
            expires_at,
            got.price,
            flow.fee,
            min_margin,
            tiers,
            {
                i: _Reply(r, a.ping_id, dict(a.carried), a.ping_ms, a.http_status)
                for i, r in replies.items()
                for a in (machine.attempts[i],)
            },
        )
        await self._quotes.put(quote_id, _encode(paused), expires_at - epoch + KEEP_AFTER_EXPIRY_S)
        answer = QuoteAnswer(
            quote_id, flow.id, source.id, True, got.price, expires_at, "", config.version, elapsed_ms
        )
        await self._book_quote(answer, epoch, "offered", revenue)
        log.info(
            "quote.offered",
            quote_id=quote_id,
            flow=flow.id,
            source=source.id,
            price=fmt(got.price),
            expires_in_s=round(expires_at - epoch, 3),
        )
        return answer

    def _quote_lead(self, req: QuoteRequest, config: RuntimeConfig) -> tuple[str, Lead]:
        """The ping fields against the schema (PII refused, PII not required), flow and source."""
        problems = []
        if not req.flow:
            problems.append("flow: required")
        if not req.source_id:
            problems.append("source_id: required")
        flow = config.flows.get(req.flow)
        # The flow's lead type decides the fields (an unknown flow: the default type's, to say all).
        schema = config.schema_of(flow) if flow is not None else config.schema
        pii = schema.pii_fields
        problems += [
            f"fields.{name}: personal data (pii) is never quoted; send it with Commit"
            for name in sorted(req.fields)
            if name in pii
        ]
        lead: Lead | None = None
        try:
            lead = self._ping_schema(config, schema).validate(
                {k: v for k, v in req.fields.items() if k not in pii}
            )
        except LeadInvalid as exc:
            problems.extend(exc.problems)
        if problems or lead is None:
            raise LeadInvalid(problems)
        if flow is None:
            raise NotFound(f"flow {req.flow!r} is not configured")
        seller(config, flow, req.source_id)
        return flow.id, lead

    def _ping_schema(self, config: RuntimeConfig, schema: LeadSchema) -> LeadSchema:
        """The lead type's schema with personal fields optional: a quote carries none of them."""
        key = f"{config.version}/{id(schema)}"
        ping = self._ping_schemas.get(key)
        if ping is None:
            fields = {n: replace(s, required=s.required and not s.pii) for n, s in schema.fields.items()}
            ping = replace(schema, fields=fields)
            if not any(k.startswith(f"{config.version}/") for k in self._ping_schemas):
                self._ping_schemas = {}  # a new version: the old one's schemas go
            self._ping_schemas[key] = ping
        return ping

    async def _book_quote(
        self, answer: QuoteAnswer, quoted_at: float, state: QuoteState, revenue: Decimal | None
    ) -> None:
        if self._quote_books is None:
            return
        record = QuoteRecord(
            answer.quote_id,
            answer.source_id,
            answer.flow,
            answer.config_version,
            quoted_at,
            answer.expires_at,
            state,
            answer.price,
            revenue,
            answer.reason,
        )
        await self._book(record)

    async def _book(self, item: QuoteRecord | QuoteOutcome) -> None:
        """Stats, not money (a commit's lead record books the money): a quote the books do not
        take in time is logged, never refused for it."""
        assert self._quote_books is not None
        try:
            async with asyncio.timeout(1.0):
                await self._quote_books.quote(item)
        except Exception as exc:
            log.error("quote.unbooked", quote_id=item.quote_id, error=type(exc).__name__)

    # --- Commit -----------------------------------------------------------------------------

    async def commit(
        self, quote_id: str, fields: Mapping[str, str], caller_budget_s: float | None = None
    ) -> RoutingResult:
        """Sell the quoted lead: the answer is RouteLead's; a repeat answers from the first."""
        if not _QUOTE_ID.match(quote_id):
            raise QuoteUnknown(f"quote_id {quote_id[:40]!r} is not a quote id (q- and 32 hex digits)")
        now = self._clock()
        paused = await self._load(quote_id, now)
        lead = self.config.schema.validate(fields)
        differs = sorted(
            k
            for k in set(lead.ping_fields) | set(paused.fields)
            if lead.ping_fields.get(k) != paused.fields.get(k)
        )
        if differs:
            shown = ", ".join(f"fields.{k}" for k in differs[:10])
            raise QuoteMismatch(
                f"the lead differs from the quoted ping fields ({shown}): commit the lead that was "
                "quoted, or quote this one"
            )
        if now >= paused.expires_at:
            if not await self._quotes.committed(quote_id):
                if self._quote_books is not None:
                    await self._book(QuoteOutcome(quote_id, "expired", now))
                raise QuoteExpired(_expired(quote_id, paused.expires_at, now))
        else:
            await self._quotes.mark_committed(quote_id, paused.expires_at - now + KEEP_AFTER_EXPIRY_S)
        token = _resuming.set(paused)
        try:
            result = await self.route(
                LeadRequest(quote_id, paused.flow, paused.source_id, fields, caller_budget_s=caller_budget_s)
            )
        finally:
            _resuming.reset(token)
        if not result.replayed:
            await self._limits.posted(paused.source_id, now)
            if self._quote_books is not None:
                won: QuoteState = "won" if result.outcome is Outcome.SOLD else "lost"
                await self._book(QuoteOutcome(quote_id, won, self._clock()))
        return result

    async def _load(self, quote_id: str, now: float) -> Paused:
        data = await self._quotes.get(quote_id)
        if data is not None:
            return _decode(data)
        booked = await self._quote_books.find_quote(quote_id) if self._quote_books is not None else None
        if booked is not None and booked.state == "no_offer":
            raise QuoteUnknown(f"quote {quote_id} made no offer: there is nothing to commit")
        if booked is not None and booked.expires_at.timestamp() <= now:
            raise QuoteExpired(_expired(quote_id, booked.expires_at.timestamp(), now))
        raise QuoteUnknown(
            f"quote {quote_id} is unknown (quotes are kept {KEEP_AFTER_EXPIRY_S / 3600:.0f} h past "
            "their expiry): ask for a new quote"
        )

    async def _spec(
        self,
        routed: Routed,
        identity: str,
        started: float,
        budget_s: float,
        looked: Mapping[str, str] | None = None,
    ) -> AuctionSpec:
        """A commit's auction: the quote's seats and facts; the cost is the quoted price."""
        paused = _resuming.get()
        if paused is None or paused.id != routed.id:
            return await super()._spec(routed, identity, started, budget_s, looked)
        flow, source, buyers = routed.flow, routed.source, routed.config.buyers
        now = datetime.fromtimestamp(paused.quoted_at, UTC)
        epoch = self._clock()
        tiers = []
        index = 0
        for tier in paused.tiers:
            seats = []
            for seat in tier.seats:
                b = buyers.get(seat.bidder.id)
                skip = seat.skip
                reply = paused.replies.get(index)
                if b is None:
                    bidder = seat.bidder
                    skip = skip or (
                        Status.PAUSED,
                        "no longer enabled in the live configuration: not posted to",
                    )
                else:
                    bidder = replace(
                        seat.bidder,
                        priority=b.priority,
                        fixed_price=b.fixed_price,
                        payment_days=b.payment_days,
                        pricing=b.pricing,
                        price_on_post=b.price_on_post,
                    )
                    if skip is None and b.fixed_price is None and reply is None:
                        skip = (Status.NOT_OFFERED, "not pinged for the quote: a commit asks no new buyer")
                    if skip is None and reply is not None:
                        lasts = ping_expiry(reply.reply.conditions)
                        if lasts is not None and epoch > paused.quoted_at + lasts:
                            skip = (
                                Status.CONDITION_FAILED,
                                f"its bid expired ({lasts:g} s) before the commit",
                            )
                    if skip is None and identity and b.dedupe_ttl_s:
                        why = await self._seating._seen_by_buyer(b, identity)
                        if why:
                            skip = (Status.DUPLICATE_FOR_BUYER, why)
                seats.append(Seat(bidder, skip))
                index += 1
            tiers.append(replace(tier, seats=tuple(seats)))
        return flow.auction(
            tiers,
            Facts(paused.fields, paused.lead_age_s, now),
            now,
            ping_end=started,
            deadline=started + budget_s,
            pricing=SourcePricing(paused.price),
            fixed_cost=paused.price + paused.fee,
            pay_on=source.pay_on,
            # A fallback may not sell below what the source is owed plus the margin (one buyer).
            margin_floor=paused.price + paused.fee + paused.min_margin if flow.max_buyers == 1 else None,
            test=routed.test,
        )

    async def _drive(self, machine: Auction, routed: Routed) -> Done:
        """A commit replays the quote's ping answers, then posts live like any lead."""
        paused = _resuming.get()
        if paused is not None and paused.id == routed.id:
            action = machine.action
            while isinstance(action, Ping):
                kept = {i: paused.replies[i].reply for i in action.seats if i in paused.replies}
                action = machine.send(time.monotonic(), kept)
            for i, r in paused.replies.items():
                a = machine.attempts[i]
                a.ping_id, a.carried, a.ping_ms, a.http_status = (
                    r.ping_id,
                    dict(r.carried),
                    r.ping_ms,
                    r.http_status,
                )
        return await super()._drive(machine, routed)


def _expired(quote_id: str, expires_at: float, now: float) -> str:
    when = datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="milliseconds")
    return f"quote {quote_id} expired at {when} ({now - expires_at:.1f} s ago): ask for a new quote"


# --- the kept quote ---------------------------------------------------------------------------


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _encode(p: Paused) -> bytes:
    doc: dict[str, Any] = {
        "v": 1,
        "id": p.id,
        "flow": p.flow,
        "source": p.source_id,
        "version": p.config_version,
        "fields": dict(p.fields),
        "at": p.quoted_at,
        "age": p.lead_age_s,
        "expires": p.expires_at,
        "price": str(p.price),
        "fee": str(p.fee),
        "min_margin": str(p.min_margin),
        "tiers": [
            {
                "name": t.name,
                "mode": t.mode,
                "order": t.order,
                "floor": _money(t.floor),
                "seats": [
                    {
                        "buyer": s.bidder.id,
                        "skip": [s.skip[0].value, s.skip[1]] if s.skip is not None else None,
                        "rate": str(s.bidder.accept_rate),
                        "counts": dict(s.bidder.counts),
                    }
                    for s in t.seats
                ],
            }
            for t in p.tiers
        ],
        "replies": {
            str(i): {
                "kind": r.reply.kind,
                "reason": r.reply.reason,
                "price": _money(r.reply.price),
                "exclusive": r.reply.exclusive,
                "conditions": dict(r.reply.conditions),
                "ping_id": r.ping_id,
                "carried": dict(r.carried),
                "ping_ms": r.ping_ms,
                "http": r.http_status,
            }
            for i, r in p.replies.items()
        },
    }
    # Buyers' condition values may be exact decimals: kept as their text.
    return orjson.dumps(doc, default=str)


def _decode(data: bytes) -> Paused:
    doc = orjson.loads(data)
    tiers = []
    for t in doc["tiers"]:
        mode: TierMode = t["mode"]
        order: TierOrder = t["order"]
        seats = tuple(
            Seat(
                Bidder(s["buyer"], accept_rate=Decimal(s["rate"]), counts=s["counts"]),
                (Status(s["skip"][0]), s["skip"][1]) if s["skip"] is not None else None,
            )
            for s in t["seats"]
        )
        floor = Decimal(t["floor"]) if t["floor"] is not None else None
        tiers.append(TierSpec(t["name"], seats, mode, order, floor))
    replies = {}
    for i, r in doc["replies"].items():
        kind: PingKind = r["kind"]
        price = Decimal(r["price"]) if r["price"] is not None else None
        reply = PingReply(kind, r["reason"], price, r["exclusive"], r["conditions"])
        replies[int(i)] = _Reply(reply, r["ping_id"], r["carried"], r["ping_ms"], r["http"])
    return Paused(
        doc["id"],
        doc["flow"],
        doc["source"],
        doc["version"],
        doc["fields"],
        doc["at"],
        doc["age"],
        doc["expires"],
        Decimal(doc["price"]),
        Decimal(doc["fee"]),
        Decimal(doc["min_margin"]),
        tuple(tiers),
        replies,
    )


__all__ = [
    "Inbound",
    "QuoteAnswer",
    "QuoteExpired",
    "QuoteLimited",
    "QuoteMismatch",
    "QuoteRefused",
    "QuoteRequest",
    "QuoteUnknown",
]
