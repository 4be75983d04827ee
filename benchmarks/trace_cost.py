"""What a lead's spans cost in CPU: `python -m benchmarks.trace_cost [LEADS]`.

A lead of fast-10 leaves a SERVER span and eleven CLIENT spans (ten pings, one post), each with
the attributes the router sets. Measured in this process, best of five rounds, in µs per lead:

- **live**: as the router makes them today — each bid's span started when its ping leaves and
  ended when the answer is in (`telemetry/decision.py`);
- **after**: every bid's span built once the ping window closed, with explicit start and end
  times and all attributes at creation (one attribute validation per span);
- **export**: what the OTLP exporter's thread then spends encoding those spans to protobuf
  (`encode_spans`, as BatchSpanProcessor hands them over), the part a collector adds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

BIDS = 11


class Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


SERVER, CLIENT = trace.SpanKind.SERVER, trace.SpanKind.CLIENT


def live(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("RouteLead", kind=SERVER, attributes={"lead.id": "L-1"}) as lead:
        spans = [
            tracer.start_span("ping", kind=CLIENT, attributes={"buyer.id": f"b{i}", "tier": "t1"})
            for i in range(BIDS)
        ]
        for s in spans:
            s.set_attributes({"status": "BID", "latency_ms": 3.25, "http.status_code": 200, "price": "20.00"})
            s.end()
        lead.set_attributes({"outcome": "SOLD", "revenue": "20.00", "cost": "5.00", "margin": "15.00"})


def after(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("RouteLead", kind=SERVER, attributes={"lead.id": "L-1"}) as lead:
        t0 = time.time_ns()
        for i in range(BIDS):
            attrs: dict[str, str | float | int] = {"buyer.id": f"b{i}", "tier": "t1", "status": "BID"}
            attrs["latency_ms"] = 3.25
            attrs |= {"http.status_code": 200, "price": "20.00"}
            s = tracer.start_span("ping", kind=CLIENT, attributes=attrs, start_time=t0)
            s.end(end_time=t0 + 3_250_000)
        lead.set_attributes({"outcome": "SOLD", "revenue": "20.00", "cost": "5.00", "margin": "15.00"})


def best(rounds: int, leads: int, run: Callable[[], object]) -> float:
    took = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(leads):
            run()
        took.append((time.process_time() - t0) / leads * 1e6)
    return min(took)


def main(leads: int) -> None:
    kept = Keep()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("routelead")
    bare = TracerProvider().get_tracer("routelead")  # no processor: the SDK's own cost
    print(f"per lead of {BIDS} bids + 1 SERVER span, µs of CPU (best of 5 rounds of {leads} leads):")
    print(f"  live,  spans made only        {best(5, leads, lambda: live(bare)):8.1f}")
    print(f"  after, spans made only        {best(5, leads, lambda: after(bare)):8.1f}")
    print(f"  no tracing (no-op provider)   {best(5, leads, lambda: live(trace.NoOpTracer())):8.1f}")
    kept.spans.clear()
    live(tracer)
    one_lead = list(kept.spans)
    encode = best(5, leads, lambda: encode_spans(one_lead).SerializeToString())
    print(f"  export: OTLP protobuf encode  {encode:8.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
