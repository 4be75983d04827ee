"""RoutingResult to and from JSON: a replica hands another the first answer through Redis, and the
memory store keeps answers compact (no pickle: stored answers are data, never code)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from routelead.domain.outcome import Attempt, Outcome, RoutingResult, Sale, Status


def _default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def encode(r: RoutingResult) -> bytes:
    return orjson.dumps(r, default=_default)


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def decode(raw: bytes) -> RoutingResult:
    """Every field comes back, so a replayed answer is the first answer; `.get` reads entries an
    older release stored without the later fields."""
    d = orjson.loads(raw)
    return RoutingResult(
        lead_id=d["lead_id"],
        flow=d["flow"],
        source_id=d["source_id"],
        test=d["test"],
        outcome=Outcome(d["outcome"]),
        cost=Decimal(d["cost"]),
        sales=[
            Sale(
                s["buyer_id"],
                Decimal(s["price"]),
                s["buyer_lead_id"],
                s["exclusive"],
                s["tier"],
                Decimal(s.get("cost", "0.00")),
                _dec(s.get("stated_price")),
            )
            for s in d["sales"]
        ],
        attempts=[
            Attempt(
                a["buyer_id"],
                a["tier"],
                Status(a["status"]),
                _dec(a["price"]),
                a["ping_ms"],
                a["post_ms"],
                a["reason"],
                a["http_status"],
                a["ping_id"],
                a.get("carried", {}),
                a["exclusive"],
                a.get("unsettled", False),
                _dec(a.get("offered")),
                a.get("post_id", ""),
            )
            for a in d["attempts"]
        ],
        trace_id=d["trace_id"],
        elapsed_ms=d["elapsed_ms"],
        replayed=d["replayed"],
        config_version=d.get("config_version", ""),
        request_digest=d.get("request_digest", ""),
    )
