"""One trace per lead: the span tree, its attributes, the caller's context, traceparent to buyers."""

from __future__ import annotations

import io
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from routelead.settings import SettingsError, load_settings
from routelead.telemetry.decision import BidSpan, buyer_span
from routelead.telemetry.logs import configure_logging
from routelead.telemetry.spans import ledger_span, step_span
from routelead.telemetry.tracing import add_processor, build_provider, otlp_exporter
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid, hang, no_bid, slow
from tests.configs import GOOD_LEAD, PII_VALUES, buyer
from tests.conftest import Harness, Start

_EXPORTER = InMemorySpanExporter()
add_processor(SimpleSpanProcessor(_EXPORTER))

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


async def _route(h: Harness, flags: str = "01") -> pb.RouteLeadResponse:
    request = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=GOOD_LEAD)
    md = (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-{flags}"),)
    reply: pb.RouteLeadResponse = await h.stub.RouteLead(request, timeout=10, metadata=md)
    return reply


def _tree(spans: InMemorySpanExporter) -> tuple[ReadableSpan, dict[str, list[ReadableSpan]]]:
    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "RouteLead")
    assert root.context is not None
    children: dict[str, list[ReadableSpan]] = {}
    for s in finished:
        if s.parent is not None and s.parent.span_id == root.context.span_id:
            children.setdefault(s.name, []).append(s)
    return root, children


async def test_one_trace_per_lead_is_a_child_of_the_callers_span(
    buyers: BuyerServer, start: Start, spans: InMemorySpanExporter
) -> None:
    buyers.on("a", ping=bid(30), post=accept("A-1"))
    buyers.on("b", ping=no_bid())
    buyers.on("c", ping=hang())
    h = await start(
        [buyer(buyers.url, "a", caps={"day": 5}), buyer(buyers.url, "b"), buyer(buyers.url, "c")],
        tiers=[["a", "b"], ["c"]],
    )

    reply = await _route(h)

    assert reply.outcome == pb.SOLD and reply.trace_id == CALLER_TRACE
    root, children = _tree(spans)
    assert root.context is not None and root.parent is not None
    assert format(root.context.trace_id, "032x") == CALLER_TRACE
    assert format(root.parent.span_id, "016x") == CALLER_SPAN and root.parent.is_remote
    assert root.kind is SpanKind.SERVER
    assert root.attributes is not None
    assert root.attributes["outcome"] == "SOLD" and root.attributes["revenue"] == "30.00"
    assert root.attributes["margin"] == "20.00" and root.attributes["flow"] == "solar"

    pings = {s.attributes["buyer.id"]: s.attributes for s in children["ping"] if s.attributes}
    assert set(pings) == {"a", "b", "c"}
    assert pings["a"]["tier"] == "t1" and pings["c"]["tier"] == "t2"
    assert pings["a"]["status"] == "BID" and pings["a"]["price"] == "30.00"
    assert pings["a"]["http.status_code"] == 200
    assert pings["b"]["status"] == "NO_BID" and "price" not in pings["b"]
    assert pings["c"]["status"] == "TIMED_OUT" and "http.status_code" not in pings["c"]
    assert all(float(str(p["latency_ms"])) > 0 for p in pings.values())
    assert float(str(pings["c"]["latency_ms"])) >= 300  # waited out its 400 ms timeout or the window

    [post] = children["post"]
    assert post.kind is SpanKind.CLIENT and post.attributes is not None
    assert post.attributes["buyer.id"] == "a" and post.attributes["status"] == "POST_ACCEPTED"
    assert post.attributes["price"] == "30.00" and post.attributes["http.status_code"] == 200

    # The capped winner's slot is reserved before the post and committed after it.
    [reserve], [commit] = children["cap.reserve"], children["cap.commit"]
    assert reserve.attributes is not None and reserve.attributes["cap.reserved"] is True
    assert (
        reserve.end_time is not None and post.start_time is not None and reserve.end_time <= post.start_time
    )
    assert commit.start_time is not None and post.end_time is not None and commit.start_time >= post.end_time

    every_value = " ".join(str(v) for s in spans.get_finished_spans() for v in (s.attributes or {}).values())
    for value in PII_VALUES:
        assert value not in every_value


async def test_ping_spans_made_after_the_answer_keep_the_pings_own_times(
    buyers: BuyerServer, start: Start, spans: InMemorySpanExporter
) -> None:
    """Spans of buyers that take no trace context are built once the answer is in: they must
    still sit where the ping happened, inside the lead's span, as long as the ping took."""
    buyers.on("slow", ping=slow(0.2, bid(30)), post=accept())
    buyers.on("quick", ping=no_bid())
    h = await start([buyer(buyers.url, "slow"), buyer(buyers.url, "quick", trace_context=True)])

    await _route(h)

    root, children = _tree(spans)
    assert root.start_time is not None and root.end_time is not None
    by_buyer = {s.attributes["buyer.id"]: s for s in children["ping"] if s.attributes}
    late = by_buyer["slow"]
    assert late.start_time is not None and late.end_time is not None and late.attributes is not None
    assert root.start_time <= late.start_time < late.end_time <= root.end_time
    took_ms = (late.end_time - late.start_time) / 1e6
    assert took_ms >= 200 and abs(took_ms - float(str(late.attributes["latency_ms"]))) < 50
    assert late.attributes["status"] == "BID" and late.attributes["tier"] == "t1"
    # The traced buyer's span was open before its request: same shape, same attributes.
    quick = by_buyer["quick"]
    assert quick.attributes is not None and quick.attributes["status"] == "NO_BID"
    assert quick.start_time is not None and root.start_time <= quick.start_time


@pytest.mark.parametrize("current", [False, True], ids=["built-after", "held-open"])
def test_a_buyer_span_that_fails_names_the_exception_type_never_its_message(
    spans: InMemorySpanExporter, current: bool
) -> None:
    """Exception messages can quote a lead's data: a failed ping or post span says what kind of
    exception it was and nothing more, as every step span does."""
    with pytest.raises(ValueError, match="could not read"), BidSpan("ping", "a", "t1", current=current):
        raise ValueError("could not read jane.doe@example.com")
    with pytest.raises(KeyError), buyer_span("post", "a", "t1", current=current):
        raise KeyError("555-867-5309")

    failed = {s.name: s for s in spans.get_finished_spans()}
    for name, kind in (("ping", "ValueError"), ("post", "KeyError")):
        span = failed[name]
        assert span.status.status_code is StatusCode.ERROR and span.status.description == kind
        assert span.attributes is not None and span.attributes["error.type"] == kind
        assert span.events == ()  # no exception event: its message would carry the data
        shown = " ".join(str(v) for v in span.attributes.values()) + (span.status.description or "")
        assert "jane.doe" not in shown and "867" not in shown


async def test_a_lead_without_caller_context_starts_its_own_trace(
    buyers: BuyerServer, start: Start, spans: InMemorySpanExporter
) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    h = await start([buyer(buyers.url, "a")])

    reply = await h.route()

    root, children = _tree(spans)
    assert root.parent is None and root.context is not None
    assert reply.trace_id == format(root.context.trace_id, "032x") != CALLER_TRACE
    assert len(children["ping"]) == 1 and len(children["post"]) == 1


async def test_an_unsampled_caller_is_followed_and_nothing_is_recorded(
    buyers: BuyerServer, start: Start, spans: InMemorySpanExporter
) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    h = await start([buyer(buyers.url, "a")])

    reply = await _route(h, flags="00")

    # The default sampler is parent-based: the caller chose not to sample, so neither do we,
    # but the lead still carries the trace id for correlation.
    assert reply.outcome == pb.SOLD and reply.trace_id == CALLER_TRACE
    assert spans.get_finished_spans() == ()


async def test_traceparent_goes_only_to_buyers_that_asked_for_it(
    buyers: BuyerServer, start: Start, spans: InMemorySpanExporter
) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    buyers.on("b", ping=bid(20))
    h = await start([buyer(buyers.url, "a", trace_context=True), buyer(buyers.url, "b")])

    await _route(h)

    _, children = _tree(spans)
    span_ids = {
        (s.name, s.attributes["buyer.id"] if s.attributes else ""): format(s.context.span_id, "016x")
        for s in children["ping"] + children["post"]
        if s.context is not None
    }
    for step in ("ping", "post"):
        [got] = buyers.got("a", step)
        version, trace_id, parent_id, flags = got.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", CALLER_TRACE, "01")
        assert parent_id == span_ids[(step, "a")]  # the buyer's span would hang under our ping/post
    assert all("traceparent" not in r.headers for r in buyers.got("b"))


async def test_log_lines_carry_trace_and_span_ids(
    buyers: BuyerServer, start: Start, spans: InMemorySpanExporter
) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    out = io.StringIO()
    configure_logging("INFO", out, cache=False)
    try:
        h = await start([buyer(buyers.url, "a")])
        await _route(h)
    finally:
        configure_logging("INFO", cache=False)
    root, _ = _tree(spans)
    assert root.context is not None
    decision = next(x for x in map(orjson.loads, out.getvalue().splitlines()) if x["event"] == "lead.routed")
    assert decision["trace_id"] == CALLER_TRACE
    assert decision["span_id"] == format(root.context.span_id, "016x")


def test_sampling_follows_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    provider = build_provider(load_settings({}))
    assert isinstance(provider.sampler, ParentBased)
    root = provider.sampler._root  # the sampler used when the caller sent no context
    assert isinstance(root, TraceIdRatioBased) and root.rate == 0.25
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert build_provider(load_settings({})).sampler is ALWAYS_OFF


def test_otlp_export_only_when_an_endpoint_is_set() -> None:
    def exporter(env: dict[str, str]) -> object:
        return otlp_exporter(load_settings(env))

    assert exporter({}) is None
    url = "http://127.0.0.1:4318"
    assert isinstance(exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": url}), HttpExporter)  # spec default
    grpc_env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    assert isinstance(exporter(grpc_env), GrpcExporter)
    assert exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_TRACES_EXPORTER": "none"}) is None
    with pytest.raises(
        SettingsError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL: .*'grpc' or 'http/protobuf', got 'http/json'"
    ):
        exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


async def test_ledger_and_failed_steps_get_spans_without_exception_text(spans: InMemorySpanExporter) -> None:
    with ledger_span("sale", "L-1", **{"buyer.id": "a", "price": "30.00"}):
        pass
    with pytest.raises(RuntimeError), step_span("cap.reserve", {"buyer.id": "a"}):
        raise RuntimeError("maria.gonzalez@example.com")  # a message that quotes data
    ledger, failed = spans.get_finished_spans()
    assert ledger.name == "ledger.sale" and ledger.kind is SpanKind.CLIENT
    assert dict(ledger.attributes or {}) == {"lead.id": "L-1", "buyer.id": "a", "price": "30.00"}
    assert failed.status.status_code is StatusCode.ERROR and failed.status.description == "RuntimeError"
    assert failed.events == () and "maria" not in str(failed.to_json())
