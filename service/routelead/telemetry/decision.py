"""What a lead leaves behind for ops: a CLIENT span per ping or post, and one decision log line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal
from types import TracebackType

import structlog
from opentelemetry import trace

from routelead.domain.money import fmt
from routelead.domain.outcome import RoutingResult

log = structlog.get_logger("routelead.router")
tracer = trace.get_tracer("routelead")


class BidSpan:
    """A ping's CLIENT span, made once its answer is in: explicit start and end times and every
    attribute at creation, so the SDK validates attributes once and no span object lives through
    the ping window (about a third cheaper than a span held open; benchmarks/README.md). Jaeger
    shows it exactly as a span held open. A buyer that takes our trace context gets the span
    started before its request instead (`buyer_span`): its id travels in the traceparent."""

    __slots__ = ("_attrs", "_live", "_name", "_start_ns")

    def __init__(self, name: str, buyer_id: str, tier: str, *, current: bool) -> None:
        self._name = name
        self._attrs: dict[str, str | float | int] = {"buyer.id": buyer_id, "tier": tier}
        self._live: AbstractContextManager[trace.Span] | None = (
            buyer_span(name, buyer_id, tier, current=True) if current else None
        )
        self._start_ns = 0

    def __enter__(self) -> BidSpan:
        if self._live is not None:
            self._live.__enter__()
        self._start_ns = time.time_ns()
        return self

    def result(self, status: str, http_status: int, price: Decimal | None, ms: float) -> None:
        self._attrs.update(_result_attributes(status, http_status, price, ms))

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            trace.get_current_span().set_attributes(self._attrs)
            self._live.__exit__(kind, exc, tb)
            return
        if exc is not None:
            # The exception's type only, as step spans do: a message can quote the lead's data.
            self._attrs["error.type"] = type(exc).__name__
        span = tracer.start_span(
            self._name, kind=trace.SpanKind.CLIENT, attributes=self._attrs, start_time=self._start_ns
        )
        if exc is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        span.end()


@contextmanager
def buyer_span(name: str, buyer_id: str, tier: str, *, current: bool) -> Iterator[trace.Span]:
    """A CLIENT span per ping or post. Made current only when the buyer takes our trace context
    (with_traceparent reads the current span); otherwise start_span skips the context attach and
    detach, about a third of a span's cost (benchmarks/README.md). An exception marks it failed
    with its type only, as step spans do: a message can quote the lead's data."""
    attributes = {"buyer.id": buyer_id, "tier": tier}
    kind = trace.SpanKind.CLIENT
    opened: AbstractContextManager[trace.Span] = (
        tracer.start_as_current_span(
            name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
        )
        if current
        else tracer.start_span(
            name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
        )
    )
    with opened as span:
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            raise


# The attempt status each answer kind gives, as the span shows it (the proto's names).
PING_STATUS = {"bid": "BID", "no_bid": "NO_BID", "timed_out": "TIMED_OUT", "error": "ERROR"}
POST_STATUS = {
    "accepted": "POST_ACCEPTED",
    "rejected": "POST_REJECTED",
    "unknown": "POST_ERROR",
    "failed": "POST_ERROR",
    "capped": "SKIPPED_CAP",
    "late": "NOT_OFFERED",
}


def span_result(span: trace.Span, status: str, http_status: int, price: Decimal | None, ms: float) -> None:
    # One set_attributes call: the SDK takes its lock and validates once, not once per attribute.
    span.set_attributes(_result_attributes(status, http_status, price, ms))


def _result_attributes(
    status: str, http_status: int, price: Decimal | None, ms: float
) -> dict[str, str | float | int]:
    attrs: dict[str, str | float | int] = {"status": status, "latency_ms": round(ms, 3)}
    if http_status:
        attrs["http.status_code"] = http_status
    if price is not None:
        attrs["price"] = fmt(price)
    return attrs


def lead_span_result(span: trace.Span, r: RoutingResult) -> None:
    span.set_attributes(
        {
            "outcome": r.outcome.value,
            "revenue": fmt(r.revenue),
            "cost": fmt(r.cost),
            "margin": fmt(r.margin),
            "latency_ms": round(r.elapsed_ms, 3),
        }
    )


def log_decision(r: RoutingResult, version: str) -> None:
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
