"""Lookup steps (verification / enrichment) before any ping, on real servers: an aiohttp verifier
and buyers, the service over real gRPC, real books. Their facts feed filters and pricing; their
failure policies hold within the lead's deadline; the books and `routelead lead` show each check."""

from __future__ import annotations

import copy
import io
import re
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from routelead.api.server import Service
from routelead.cli.books import print_story
from routelead.config.loader import ConfigError
from routelead.records.ledger import Ledger
from routelead.telemetry.logs import configure_logging
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, hang, respond
from tests.configs import GOOD_LEAD, LEAD_FIELDS, PII_VALUES, buyer, compile_doc, document


def verifier(url: Any, on_failure: str = "continue", **extra: Any) -> dict[str, Any]:
    """A phone verifier at /verifier/phone: sends the phone, reads `valid` as `phone.valid`."""
    return {
        "id": "phone-check",
        "url": url("verifier", "phone"),
        "timeout_ms": 300,
        "fields": {"phone": {"field": "phone"}, "ref": {"from": "lead_id"}},
        "answer": {"facts": {"phone.valid": "valid", "phone.line": "line_type"}},
        "on_failure": on_failure,
        **extra,
    }


def with_lookups(doc: dict[str, Any], *lookups: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["lead"] = {"fields": LEAD_FIELDS, "lookups": list(lookups)}
    return doc


def picky(url: Any, **extra: Any) -> dict[str, Any]:
    """Buys only verified phones, and pays $5 more for a mobile one."""
    return buyer(
        url,
        "picky",
        filter={"field": "phone.valid", "equals": "true"},
        pricing=[{"when": {"field": "phone.line", "equals": "mobile"}, "add": "5.00"}],
        **extra,
    )


async def route(service: Service, **kw: Any) -> pb.RouteLeadResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        stub = pb_grpc.RouteLeadStub(channel)
        request = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=GOOD_LEAD, **kw)
        reply: pb.RouteLeadResponse = await stub.RouteLead(request, timeout=10)
        return reply


@pytest.fixture
async def books(tmp_path: Path) -> Any:
    ledger = await Ledger.open(f"sqlite:///{tmp_path / 'books.db'}")
    yield ledger
    await ledger.close()


async def test_lookup_facts_feed_filters_and_pricing_and_reach_the_books(
    buyers: BuyerServer, books: Ledger
) -> None:
    buyers.behaviours[("verifier", "phone")] = respond({"valid": True, "line_type": "mobile"})
    buyers.on("picky", ping=bid("30.00"), post=accept("P-1"))
    doc = with_lookups(document([picky(buyers.url)]), verifier(buyers.url))
    async with Service(compile_doc(doc), ledger=books) as service:
        reply = await route(service, lead_id="lk-1")
    assert reply.outcome == pb.SOLD
    assert reply.sales[0].price == "35.00"  # the bid, +$5 for a mobile phone
    [check] = [c for c in reply.checks if c.kind == "lookup"]
    assert (check.name, check.kind, check.result) == ("phone-check", "lookup", "passed")
    # The verifier got the phone (normalised) and our lead id, by the buyers' request machinery.
    [sent] = buyers.got("verifier", "phone")
    assert b"5552013344" in sent.body and b"lk-1" in sent.body
    # The lookup answered before the ping went out.
    order = [(r.buyer, r.step) for r in buyers.received]
    assert order.index(("verifier", "phone")) < order.index(("picky", "ping"))

    story = await books.lead("lk-1")
    assert story.lead is not None
    assert story.lead["compliance"]["checks"][-1]["facts"] == {"phone.valid": "true", "phone.line": "mobile"}
    out = io.StringIO()
    print_story(story, out)
    assert "check lookup phone-check: passed" in out.getvalue()
    assert "phone.valid=true" in out.getvalue()


async def test_an_unverified_phone_never_reaches_the_buyer(buyers: BuyerServer) -> None:
    buyers.behaviours[("verifier", "phone")] = respond({"valid": False, "line_type": "landline"})
    buyers.on("picky", ping=bid("30.00"), post=accept("P-1"))
    buyers.on("open", ping=bid("20.00"), post=accept("O-1"))
    doc = with_lookups(document([picky(buyers.url), buyer(buyers.url, "open")]), verifier(buyers.url))
    async with Service(compile_doc(doc)) as service:
        reply = await route(service)
    assert reply.outcome == pb.SOLD and reply.sales[0].buyer_id == "open"
    skipped = {a.buyer_id: a for a in reply.attempts}["picky"]
    assert skipped.status == pb.SKIPPED_FILTER and "phone.valid must equal true" in skipped.reason
    assert buyers.got("picky") == []


@pytest.mark.parametrize("policy", ["reject", "false", "continue"])
async def test_a_hanging_verifier_follows_its_policy_within_the_deadline(
    buyers: BuyerServer, books: Ledger, policy: str
) -> None:
    buyers.behaviours[("verifier", "phone")] = hang(30)
    buyers.on("cautious", ping=bid("25.00"), post=accept("C-1"))
    # Sold unless the verifier said the phone is invalid.
    cautious = buyer(buyers.url, "cautious", filter={"not": {"field": "phone.valid", "equals": "false"}})
    # The verifier's own timeout is longer than the lead's whole deadline: the deadline bounds it.
    doc = with_lookups(document([cautious]), verifier(buyers.url, policy, timeout_ms=5000))
    async with Service(compile_doc(doc), ledger=books) as service:
        t0 = time.monotonic()
        reply = await route(service, lead_id=f"hang-{policy}")
        took = time.monotonic() - t0
    assert took < 1.5, f"answered after {took:.2f} s; the flow's deadline is 0.75 s"
    [check] = [c for c in reply.checks if c.kind == "lookup"]
    if policy == "reject":
        assert reply.outcome == pb.REJECTED
        # Half the 750 ms deadline, less what the lead spent before the lookup left (under load, a ms or two).
        waited = re.fullmatch(r"lookup phone-check: timed out: no answer within (\d+) ms", reply.reason)
        assert waited is not None and 340 <= int(waited.group(1)) <= 375, reply.reason
        assert check.result == "rejected"
        assert buyers.got("cautious") == []  # refused before any ping
        story = await books.lead(f"hang-{policy}")
        assert story.lead is not None and story.lead["outcome"] == "REJECTED"
        out = io.StringIO()
        print_story(story, out)
        assert "refused: lookup phone-check" in out.getvalue()
    elif policy == "false":
        assert check.result == "timed_out" and "facts set false" in check.detail
        assert reply.outcome == pb.UNSOLD and reply.attempts[0].status == pb.SKIPPED_FILTER
        assert buyers.got("cautious") == []
    else:
        assert check.result == "timed_out"
        assert reply.outcome == pb.SOLD  # no fact: the buyer's rule does not exclude it


async def test_a_failing_verifier_answer_is_a_failure_not_a_fact(buyers: BuyerServer) -> None:
    buyers.behaviours[("verifier", "phone")] = respond({"error": "quota"}, status=503)
    buyers.on("cautious", ping=bid("25.00"), post=accept("C-1"))
    cautious = buyer(buyers.url, "cautious", filter={"not": {"field": "phone.valid", "equals": "false"}})
    doc = with_lookups(document([cautious]), verifier(buyers.url, "false"))
    async with Service(compile_doc(doc)) as service:
        reply = await route(service)
    assert reply.checks[-1].result == "failed" and "HTTP 503" in reply.checks[-1].detail
    assert reply.outcome == pb.UNSOLD and buyers.got("cautious") == []


def test_check_config_names_each_lookup_problem() -> None:
    url = lambda b, s: f"http://127.0.0.1:1/{b}/{s}"  # noqa: E731
    bad = verifier(url, fields={"phone": {"field": "mobile"}})
    bad["answer"] = {"facts": {"phone.valid": "valid"}, "statuses": {"404": "no_bid"}}
    doc = with_lookups(document([buyer(url, "b", filter={"field": "email.valid", "equals": "true"})]), bad)
    with pytest.raises(ConfigError) as err:
        compile_doc(doc)
    text = str(err.value)
    assert "lead.lookups[0].fields.phone: unknown lead field 'mobile'" in text
    assert "lead.lookups[0].answer.statuses.404" in text
    assert "buyers[0].filter.field: unknown" in text  # email.valid: no lookup gives that fact
    # A fact must be dotted: it can never be a lead field a seller sends.
    plain = verifier(url)
    plain["answer"] = {"facts": {"valid": "valid"}}
    with pytest.raises(ConfigError, match=r"lookups.*facts"):
        compile_doc(with_lookups(document([buyer(url, "b")]), plain))


async def test_no_lead_value_in_lookup_spans_or_logs(buyers: BuyerServer) -> None:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    out = io.StringIO()
    configure_logging("DEBUG", out, cache=False)
    # A verifier that echoes the lead back in an unreadable answer.
    echo = b"<html>5552013344 maria.gonzalez@example.com Maria Gonzalez</html>"
    buyers.behaviours[("verifier", "phone")] = respond(echo.decode(), status=200)
    buyers.on("open", ping=bid("20.00"), post=accept("O-1"))
    try:
        doc = with_lookups(document([buyer(buyers.url, "open")]), verifier(buyers.url))
        async with Service(compile_doc(doc)) as service:
            reply = await route(service)
    finally:
        configure_logging("INFO", cache=False)
        exporter.shutdown()
    spans = [s for s in exporter.get_finished_spans() if s.name == "lookup"]
    assert len(spans) == 1 and spans[0].kind == trace.SpanKind.CLIENT
    assert dict(spans[0].attributes or {})["lookup.id"] == "phone-check"
    blob = "\n".join([out.getvalue(), str(reply.checks), *(str(dict(s.attributes or {})) for s in spans)])
    assert reply.checks[-1].result == "failed"
    for value in PII_VALUES:
        assert value not in blob, f"PII {value!r} leaked"
