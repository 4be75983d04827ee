"""W3C trace context in from the gRPC caller, out to buyers that asked for it.

Only `traceparent` / `tracestate` travel: never W3C baggage, which is free-form key/value data a
caller could fill with lead details; it is neither read from callers nor forwarded to buyers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from routelead.buyers.base import HttpRequest

_W3C = TraceContextTextMapPropagator()


def extract(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """The caller's span context from gRPC metadata (keys arrive lower-cased); empty if absent."""
    carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str) and k in _W3C.fields}
    return _W3C.extract(carrier)


@contextmanager
def caller_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> Iterator[None]:
    """Make the caller's span the parent of whatever starts inside (our RouteLead root span)."""
    token = otel_context.attach(extract(metadata))
    try:
        yield
    finally:
        otel_context.detach(token)


def with_traceparent(request: HttpRequest) -> HttpRequest:
    """The request plus `traceparent` (and `tracestate`) for the current span: the buyer's own
    tracing, if any, joins our trace as a child of our ping or post span."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    if not carrier:
        return request
    kept = tuple((k, v) for k, v in request.headers if k.lower() not in carrier)
    return HttpRequest(request.method, request.url, (*kept, *carrier.items()), request.body)
