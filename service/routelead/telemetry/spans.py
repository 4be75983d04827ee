"""Span helpers for the steps around the auction: cap reserve / commit / release and ledger writes.

The cap store is traced by wrapping the port (api/traced_caps.py, with `cap_span`), so any adapter
(memory, Redis) gets the same spans without knowing about tracing. A ledger adapter calls
`ledger_span` around each write. Attributes are ids, periods and outcomes: never lead fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

tracer = trace.get_tracer("routelead")

AttributeValue = str | bool | int | float


@contextmanager
def step_span(
    name: str, attributes: Mapping[str, AttributeValue], kind: SpanKind = SpanKind.INTERNAL
) -> Iterator[Span]:
    """A child span of the current one; an exception marks it failed with the exception's type only
    (exception messages can quote data, so `record_exception` is not used). Never made current:
    nothing runs beneath a step, and skipping the context attach / detach makes it about a third
    cheaper (several steps per lead)."""
    span = tracer.start_span(name, kind=kind, attributes=attributes)
    try:
        yield span
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.set_attribute("error.type", type(exc).__name__)
        raise
    finally:
        span.end()


@contextmanager
def cap_span(operation: str, buyer_id: str, lead_id: str) -> Iterator[Span]:
    """`cap.reserve`, `cap.commit`, `cap.release`, `cap.unsettled`."""
    with step_span(f"cap.{operation}", {"buyer.id": buyer_id, "lead.id": lead_id}) as span:
        yield span


@contextmanager
def ledger_span(operation: str, lead_id: str, **attributes: AttributeValue) -> Iterator[Span]:
    """Around one ledger write (`ledger.sale`, `ledger.settle`, …): a CLIENT span, as the books
    live in a database."""
    with step_span(f"ledger.{operation}", {"lead.id": lead_id, **attributes}, SpanKind.CLIENT) as span:
        yield span
