"""Ledger records as plain data, and their bytes on a Redis outbox stream.

The bytes are orjson of a small dict with a format version `v`; money travels as decimal strings
and times as epoch seconds, so the bytes can be produced by Python or by a Lua script alike.
A sale, as the cap-commit script appends it to `rl:{<buyer_id>}:outbox` (field `record`):

    {"v": 1, "kind": "sale", "lead_id": "L-1", "buyer_id": "b", "price": "45.10",
     "buyer_lead_id": "B-9", "exclusive": true, "tier": "t1", "settlement": "sold",
     "at": 1795379249.23, "flow": "solar", "source_id": "src-1", "test": false,
     "config_version": "v3", "cost": "10.00", "stated_price": null}

A test lead's records carry "~<lead_id>" (outcome.answer_key): its own rows in the books.

`encode(SaleRecord(...))` produces exactly this, so the router can hand the script ready bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import orjson

from routelead.domain.money import fmt
from routelead.domain.outcome import Check, RoutingResult, Status, answer_key

FORMAT_VERSION = 1
Settlement = Literal["sold", "unsettled", "rejected"]
SETTLEMENTS: tuple[Settlement, ...] = ("sold", "unsettled", "rejected")


class BadRecord(ValueError):
    """Outbox bytes that cannot be read as a ledger record (kept on the stream, never applied)."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    seq: int
    buyer_id: str
    tier: str
    status: str
    bid: Decimal | None
    ping_ms: float
    post_ms: float
    http_status: int
    reason: str
    # Before the buyer pricing rules (None in records from before it was kept).
    offered: Decimal | None = None
    # The bid asked for an exclusive sale: replay allocates it as the live auction did.
    exclusive: bool = False


@dataclass(frozen=True, slots=True)
class SaleRecord:
    lead_id: str
    buyer_id: str
    price: Decimal
    buyer_lead_id: str
    exclusive: bool
    tier: str
    settlement: Settlement
    at: float
    # Repeated from the lead so a sale that reaches the books before its lead is still reportable.
    flow: str = ""
    source_id: str = ""
    test: bool = False
    config_version: str = ""
    # This sale's share of the lead's cost (from pricing); 0 where the writer does not know it.
    cost: Decimal = Decimal("0.00")
    # A price dispute: what the post answer stated; the sale is booked at `price` (the bid).
    stated_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class LeadRecord:
    lead_id: str
    flow: str
    source_id: str
    config_version: str
    received_at: float
    answered_at: float
    outcome: str
    test: bool
    cost: Decimal
    revenue: Decimal
    elapsed_ms: float
    trace_id: str
    ping_fields: Mapping[str, str]
    attempts: tuple[AttemptRecord, ...] = ()
    sales: tuple[SaleRecord, ...] = field(default=())
    request_digest: str = ""
    lead_type: str = ""
    # The compliance checks run before any ping and a refusal's reason: {"reason", "checks"}.
    compliance: Mapping[str, Any] | None = None

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost


Record = LeadRecord | SaleRecord


def lead_record(
    result: RoutingResult,
    ping_fields: Mapping[str, str],
    received_at: float,
    answered_at: float,
    config_version: str,
) -> LeadRecord:
    """The ledger's view of one routed lead: everything but PII (the ping view only)."""
    key = answer_key(result.lead_id, result.test)
    attempts = tuple(
        AttemptRecord(
            seq=i,
            buyer_id=a.buyer_id,
            tier=a.tier,
            status=a.status.value,
            bid=a.price,
            ping_ms=round(a.ping_ms, 3),
            post_ms=round(a.post_ms, 3),
            http_status=a.http_status,
            reason=a.reason,
            offered=a.offered,
            exclusive=a.exclusive,
        )
        for i, a in enumerate(result.attempts)
    )
    sales = [
        SaleRecord(
            key,
            s.buyer_id,
            s.price,
            s.buyer_lead_id,
            s.exclusive,
            s.tier,
            "sold",
            answered_at,
            result.flow,
            result.source_id,
            result.test,
            config_version,
            s.cost,
            s.stated_price,
        )
        for s in result.sales
    ]
    # A post whose outcome is unknown may have been taken: booked as unsettled, outside revenue.
    sales.extend(
        SaleRecord(
            key,
            a.buyer_id,
            a.price,
            "",
            a.exclusive,
            a.tier,
            "unsettled",
            answered_at,
            result.flow,
            result.source_id,
            result.test,
            config_version,
        )
        for a in result.attempts
        if a.status is Status.POST_ERROR and a.unsettled and a.price is not None
    )
    return LeadRecord(
        lead_id=key,
        flow=result.flow,
        source_id=result.source_id,
        config_version=config_version,
        received_at=received_at,
        answered_at=answered_at,
        outcome=result.outcome.value,
        test=result.test,
        cost=result.cost,
        revenue=result.revenue,
        elapsed_ms=round(result.elapsed_ms, 3),
        trace_id=result.trace_id,
        ping_fields=dict(ping_fields),
        attempts=attempts,
        sales=tuple(sales),
        request_digest=result.request_digest,
        lead_type=result.lead_type,
        compliance=compliance_of(result),
    )


def compliance_of(result: RoutingResult) -> dict[str, Any] | None:
    """What the books keep of a lead's compliance checks (None when none ran)."""
    if not result.checks and not result.reason:
        return None
    return {
        "reason": result.reason,
        "checks": [
            {
                "name": c.name,
                "kind": c.kind,
                "result": c.result,
                "detail": c.detail,
                "ms": round(c.ms, 3),
                "facts": dict(c.facts),
            }
            for c in result.checks
        ],
    }


def checks_from(compliance: Mapping[str, Any] | None) -> tuple[list[Check], str]:
    if not compliance:
        return [], ""
    checks = [
        Check(
            str(c["name"]),
            str(c["kind"]),
            str(c["result"]),
            str(c.get("detail", "")),
            float(c.get("ms", 0.0)),
            {str(k): str(v) for k, v in dict(c.get("facts", {})).items()},
        )
        for c in compliance.get("checks", [])
    ]
    return checks, str(compliance.get("reason", ""))


def _money(v: Decimal | None) -> str | None:
    return None if v is None else fmt(v)


def _sale_dict(s: SaleRecord) -> dict[str, Any]:
    return {
        "lead_id": s.lead_id,
        "buyer_id": s.buyer_id,
        "price": fmt(s.price),
        "buyer_lead_id": s.buyer_lead_id,
        "exclusive": s.exclusive,
        "tier": s.tier,
        "settlement": s.settlement,
        "at": s.at,
        "flow": s.flow,
        "source_id": s.source_id,
        "test": s.test,
        "config_version": s.config_version,
        "cost": fmt(s.cost),
        "stated_price": _money(s.stated_price),
    }


def encode(record: Record) -> bytes:
    if isinstance(record, SaleRecord):
        return orjson.dumps({"v": FORMAT_VERSION, "kind": "sale", **_sale_dict(record)})
    r = record
    return orjson.dumps(
        {
            "v": FORMAT_VERSION,
            "kind": "lead",
            "lead_id": r.lead_id,
            "flow": r.flow,
            "source_id": r.source_id,
            "config_version": r.config_version,
            "received_at": r.received_at,
            "answered_at": r.answered_at,
            "outcome": r.outcome,
            "test": r.test,
            "cost": fmt(r.cost),
            "revenue": fmt(r.revenue),
            "elapsed_ms": r.elapsed_ms,
            "trace_id": r.trace_id,
            "ping_fields": dict(r.ping_fields),
            "attempts": [
                {
                    "seq": a.seq,
                    "buyer_id": a.buyer_id,
                    "tier": a.tier,
                    "status": a.status,
                    "bid": _money(a.bid),
                    "ping_ms": a.ping_ms,
                    "post_ms": a.post_ms,
                    "http_status": a.http_status,
                    "reason": a.reason,
                    "offered": _money(a.offered),
                    "exclusive": a.exclusive,
                }
                for a in r.attempts
            ],
            "sales": [_sale_dict(s) for s in r.sales],
            "request_digest": r.request_digest,
            "lead_type": r.lead_type,
            "compliance": r.compliance,
        }
    )


def _dec(v: Any, what: str) -> Decimal:
    if not isinstance(v, str):
        raise BadRecord(f"{what}: expected a decimal string")
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise BadRecord(f"{what}: not a decimal") from None
    if not d.is_finite():
        raise BadRecord(f"{what}: not a finite decimal")
    return d


def _sale(d: Mapping[str, Any]) -> SaleRecord:
    settlement = d["settlement"]
    if settlement not in SETTLEMENTS:
        raise BadRecord(f"settlement: {settlement!r} is not one of {', '.join(SETTLEMENTS)}")
    return SaleRecord(
        lead_id=str(d["lead_id"]),
        buyer_id=str(d["buyer_id"]),
        price=_dec(d["price"], "price"),
        buyer_lead_id=str(d.get("buyer_lead_id", "")),
        exclusive=bool(d.get("exclusive", False)),
        tier=str(d.get("tier", "")),
        settlement=settlement,
        at=float(d["at"]),
        flow=str(d.get("flow", "")),
        source_id=str(d.get("source_id", "")),
        test=bool(d.get("test", False)),
        config_version=str(d.get("config_version", "")),
        cost=_dec(d.get("cost", "0.00"), "cost"),
        stated_price=None if d.get("stated_price") is None else _dec(d["stated_price"], "stated_price"),
    )


def decode(data: bytes) -> Record:
    """Bytes from an outbox stream back to a record; BadRecord names what is wrong."""
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadRecord("not JSON") from None
    if not isinstance(d, dict):
        raise BadRecord("not a JSON object")
    if d.get("v") != FORMAT_VERSION:
        raise BadRecord(f"unknown format version {d.get('v')!r}")
    try:
        match d.get("kind"):
            case "sale":
                return _sale(d)
            case "lead":
                return LeadRecord(
                    lead_id=str(d["lead_id"]),
                    flow=str(d["flow"]),
                    source_id=str(d["source_id"]),
                    config_version=str(d["config_version"]),
                    received_at=float(d["received_at"]),
                    answered_at=float(d["answered_at"]),
                    outcome=str(d["outcome"]),
                    test=bool(d["test"]),
                    cost=_dec(d["cost"], "cost"),
                    revenue=_dec(d["revenue"], "revenue"),
                    elapsed_ms=float(d.get("elapsed_ms", 0.0)),
                    trace_id=str(d.get("trace_id", "")),
                    ping_fields={str(k): str(v) for k, v in dict(d.get("ping_fields", {})).items()},
                    attempts=tuple(
                        AttemptRecord(
                            seq=int(a["seq"]),
                            buyer_id=str(a["buyer_id"]),
                            tier=str(a["tier"]),
                            status=str(a["status"]),
                            bid=None if a.get("bid") is None else _dec(a["bid"], "bid"),
                            ping_ms=float(a.get("ping_ms", 0.0)),
                            post_ms=float(a.get("post_ms", 0.0)),
                            http_status=int(a.get("http_status", 0)),
                            reason=str(a.get("reason", "")),
                            offered=None if a.get("offered") is None else _dec(a["offered"], "offered"),
                            exclusive=bool(a.get("exclusive", False)),
                        )
                        for a in d.get("attempts", [])
                    ),
                    sales=tuple(_sale(s) for s in d.get("sales", [])),
                    request_digest=str(d.get("request_digest", "")),
                    lead_type=str(d.get("lead_type", "")),
                    compliance=d.get("compliance"),
                )
            case other:
                raise BadRecord(f"unknown record kind {other!r}")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BadRecord):
            raise
        raise BadRecord(f"missing or malformed field: {exc}") from None
