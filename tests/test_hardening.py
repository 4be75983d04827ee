"""Misbehaving buyers over real sockets, the circuit breaker, fuzzed requests, and no PII anywhere."""

from __future__ import annotations

import asyncio
import gzip
import io
import time
from typing import Any

import grpc
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from routelead.telemetry.logs import configure_logging
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid, raw, reject, respond
from tests.configs import GOOD_LEAD, PII_VALUES, buyer
from tests.conftest import Start
from tests.rawserver import RawServer, Script, raw_reply, reset_at_once, reset_mid_body

S = pb.AttemptStatus

GZIP_BOMB = gzip.compress(b"0" * (50 * 1024 * 1024), compresslevel=9)  # ~50 KB on the wire, 50 MB inflated


async def _sold_despite(start: Start, buyers: BuyerServer, bad: dict[str, Any]) -> pb.Attempt:
    buyers.on("good", ping=bid(20), post=accept())
    h = await start([bad, buyer(buyers.url, "good")])
    t0 = time.monotonic()
    reply = await h.route()
    assert time.monotonic() - t0 < 0.75 + 0.5
    assert reply.outcome == pb.SOLD and reply.sales[0].buyer_id == "good"
    return next(a for a in reply.attempts if a.buyer_id == "bad")


HTTP_BAD: dict[str, tuple[Any, str]] = {
    "gzip_bomb": (raw(GZIP_BOMB), "larger than"),
    "invalid_utf8": (raw(b'{"bid": true, "price": 50, "ping_id": "\xff\xfe"}'), "not valid UTF-8"),
    "duplicate_price": (raw(b'{"bid": true, "price": 1, "price": 1000}'), "duplicate key 'price'"),
    "http_404": (respond({"bid": True, "price": 50}, status=404), "HTTP 404"),
    "http_429": (respond({"bid": True, "price": 50}, status=429), "HTTP 429"),
    "http_301": (respond({}, status=301), "HTTP 301"),
    "huge_price_text": (respond({"bid": True, "price": "1e400"}), "exceeds the ceiling"),
    "huge_number": (raw(b'{"bid": true, "price": 1e400}'), "invalid JSON"),
    "price_object": (respond({"bid": True, "price": {"amount": 5}}), "type object"),
}


@pytest.mark.parametrize("kind", sorted(HTTP_BAD))
async def test_misbehaving_http_buyers(kind: str, buyers: BuyerServer, start: Start) -> None:
    behaviour, reason = HTTP_BAD[kind]
    buyers.on("bad", ping=behaviour)
    if kind == "gzip_bomb":
        buyers.behaviours[("bad", "ping")] = _gzipped(GZIP_BOMB)
    attempt = await _sold_despite(start, buyers, buyer(buyers.url, "bad"))
    assert attempt.status == S.ERROR
    assert reason in attempt.reason, attempt.reason


def _gzipped(body: bytes) -> Any:
    from aiohttp import web

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    return handler


HEADERS_ONLY = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
RAW_BAD: dict[str, tuple[Script, tuple[int, ...]]] = {
    "reset_mid_body": (reset_mid_body(), (S.ERROR,)),
    "reset_at_once": (reset_at_once(), (S.ERROR,)),
    "not_http": (raw_reply(b"SSH-2.0-OpenSSH_9.0\r\n\r\n"), (S.ERROR,)),
    "short_body": (raw_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}"), (S.ERROR,)),
    "status_199": (raw_reply(b"HTTP/1.1 199 Odd\r\nContent-Length: 0\r\n\r\n"), (S.ERROR,)),
    "headers_then_hang": (
        raw_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", then_close=False),
        (S.TIMED_OUT,),
    ),
    "header_flood": (raw_reply(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"), (S.ERROR,)),
}


@pytest.mark.parametrize("kind", sorted(RAW_BAD))
async def test_misbehaving_sockets(kind: str, buyers: BuyerServer, start: Start) -> None:
    script, statuses = RAW_BAD[kind]
    async with RawServer(script) as srv:
        bad = {"id": "bad", "ping": {"url": srv.url("ping"), "timeout_ms": 300},
               "post": {"url": srv.url("post"), "timeout_ms": 300}}  # fmt: skip
        attempt = await _sold_despite(start, buyers, bad)
    assert attempt.status in statuses, attempt
    assert attempt.reason


async def test_a_post_reset_before_any_answer_is_unsettled_and_the_exclusive_lead_goes_no_further(
    buyers: BuyerServer, start: Start
) -> None:
    async with RawServer(reset_at_once()) as srv:
        buyers.on("top", ping=bid(60))
        buyers.on("next", ping=bid(40), post=accept())
        top = buyer(buyers.url, "top", post={"url": srv.url("post")}, caps={"day": 5})
        h = await start([top, buyer(buyers.url, "next")])
        reply = await h.route()
    attempt = next(a for a in reply.attempts if a.buyer_id == "top")
    assert attempt.status == S.POST_ERROR and "outcome unknown" in attempt.reason and attempt.unsettled
    # The buyer may have it: an exclusive lead is offered to nobody else.
    assert reply.outcome == pb.UNSETTLED and not reply.sales and not buyers.got("next", "post")
    # The slot stays counted, listed for settlement.
    assert [u.state for u in await h.service.caps.list_unsettled(older_than_s=3600)] == ["unsettled"]


async def test_the_circuit_opens_after_repeated_failures_then_probes(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("sick", ping=respond({"error": "down"}, status=503))
    buyers.on("good", ping=bid(20), post=accept())
    h = await start(
        [buyer(buyers.url, "sick", breaker={"failures": 3, "cooldown_s": 0.5}), buyer(buyers.url, "good")]
    )

    statuses = []
    for i in range(5):
        reply = await h.route(GOOD_LEAD | {"email": f"cb{i}@example.com"})
        statuses.append(next(a for a in reply.attempts if a.buyer_id == "sick").status)
    assert statuses == [S.ERROR, S.ERROR, S.ERROR, S.SKIPPED_CIRCUIT, S.SKIPPED_CIRCUIT]
    assert len(buyers.got("sick", "ping")) == 3
    skipped = next(a for a in reply.attempts if a.buyer_id == "sick")
    assert "circuit open after 3 consecutive failures" in skipped.reason

    await asyncio.sleep(0.6)  # the cool-down passes; the buyer has recovered
    buyers.on("sick", ping=bid(10))
    probe = await h.route(GOOD_LEAD | {"email": "probe@example.com"})
    after = await h.route(GOOD_LEAD | {"email": "after@example.com"})
    assert next(a for a in probe.attempts if a.buyer_id == "sick").status == S.OUTBID
    assert next(a for a in after.attempts if a.buyer_id == "sick").status == S.OUTBID
    assert h.service.router is not None
    assert h.service.router.breakers.states() == {"sick": "closed", "good": "closed"}


async def test_a_consumer_the_buyer_already_bought_does_not_use_up_its_circuit_probe(
    buyers: BuyerServer, start: Start
) -> None:
    """The breaker is asked after the buyer's own duplicate window: a lead the buyer may not
    have must not take the one probe a half-open circuit lets through, or the next lead would
    find it "probing" and skip a buyer that had recovered."""
    buyers.on("sick", ping=bid(30), post=accept())
    buyers.on("good", ping=bid(20), post=accept())
    h = await start(
        [
            buyer(buyers.url, "sick", dedupe_days=90, breaker={"failures": 1, "cooldown_s": 0.3}),
            buyer(buyers.url, "good"),
        ],
        dedupe={"fields": ["email"], "days": 0},  # identity only: no flow-level rejection
    )
    bought = await h.route(GOOD_LEAD | {"email": "owned@example.com"})
    assert bought.sales[0].buyer_id == "sick"
    buyers.on("sick", ping=respond({"error": "down"}, status=503))
    failed = await h.route(GOOD_LEAD | {"email": "fails@example.com"})
    assert next(a for a in failed.attempts if a.buyer_id == "sick").status == S.ERROR  # circuit opens

    await asyncio.sleep(0.4)  # cool-down over: the next lead that may ask it is the probe
    buyers.on("sick", ping=bid(10))
    pings = len(buyers.got("sick", "ping"))
    repeat = await h.route(GOOD_LEAD | {"email": "owned@example.com"})
    assert next(a for a in repeat.attempts if a.buyer_id == "sick").status == S.DUPLICATE_FOR_BUYER
    probe = await h.route(GOOD_LEAD | {"email": "new@example.com"})
    assert next(a for a in probe.attempts if a.buyer_id == "sick").status == S.OUTBID
    assert len(buyers.got("sick", "ping")) == pings + 1
    assert h.service.router.breakers.states()["sick"] == "closed"


async def test_a_request_that_does_not_decode_is_invalid_argument(buyers: BuyerServer, start: Start) -> None:
    h = await start([buyer(buyers.url, "a")])
    # Field 4 (fields map) entry with value bytes that are not UTF-8, as a non-Python client could send.
    entry = b"\x0a\x01k" + b"\x12\x02\xff\xfe"
    raw_request = b"\x12\x05solar" + b"\x1a\x05src-1" + b"\x22" + bytes([len(entry)]) + entry
    call = h.channel.unary_unary("/routelead.v1.RouteLead/RouteLead")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(raw_request, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in (err.value.details() or "")


async def test_oversized_and_overfull_requests_get_clear_errors(buyers: BuyerServer, start: Start) -> None:
    h = await start([buyer(buyers.url, "a")])
    with pytest.raises(grpc.aio.AioRpcError) as big:
        await h.route(GOOD_LEAD | {"notes": "x" * 2_000_000})
    assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.aio.AioRpcError) as many:
        await h.route(GOOD_LEAD | {f"extra{i}": "1" for i in range(500)})
    assert many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 200" in (many.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as long:
        await h.route(GOOD_LEAD | {"first_name": "y" * 5000})
    assert long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fields.first_name: longer than" in (long.value.details() or "")


async def test_no_pii_in_logs_spans_or_errors(buyers: BuyerServer, start: Start) -> None:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    out = io.StringIO()
    configure_logging("DEBUG", out, cache=False)
    echo = "dupe of maria.gonzalez@example.com at (555) 201-3344, Maria Gonzalez"
    buyers.on("echo", ping=bid(70), post=reject(echo))
    buyers.on(
        "ok", ping=bid(30), post=respond({"status": "accepted", "lead_id": "X", "reason": "thanks Maria"})
    )
    buyers.on("broken", ping=raw(b"<html>Maria Gonzalez maria.gonzalez@example.com</html>"))
    try:
        h = await start([buyer(buyers.url, n) for n in ("echo", "ok", "broken")])
        replies = [await h.route(), await h.route(test=True, lead_id="pii-test-2")]
        errors = []
        for bad in ({"email": "maria.gonzalez@", "phone": "201-3344"}, {"state": "Maria Gonzalez"}):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await h.route(GOOD_LEAD | bad)
            errors.append(err.value.details() or "")
    finally:
        configure_logging("INFO", cache=False)
        exporter.shutdown()
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} >= {"RouteLead", "ping", "post"}
    seen = [out.getvalue(), *errors, *(str(dict(s.attributes or {})) + s.name for s in spans)]
    seen += [str(r.attempts) for r in replies]
    assert out.getvalue().count('"event":"lead.routed"') == 2  # the capture really saw the decisions
    blob = "\n".join(seen)
    for value in (*PII_VALUES, "maria.gonzalez@"):
        assert value not in blob, f"PII {value!r} leaked"


async def test_a_buyer_echoing_its_api_key_does_not_put_it_in_attempts(
    buyers: BuyerServer, start: Start
) -> None:
    from tests.configs import compile_doc, document

    key = "k3y-from-the-environment-9f8e7d"
    buyers.on("echo", ping=respond({"bid": False, "reason": f"bad key {key}"}))
    buyers.on("echo2", ping=bid(40), post=reject(f"key {key} is over quota"))
    buyers.on("ok", ping=bid(20), post=accept())
    headers = {"headers": {"X-API-Key": "${BUYER_KEY}"}}
    echo, echo2 = (
        buyer(buyers.url, "echo", ping=headers),
        buyer(buyers.url, "echo2", ping=headers, post=headers),
    )
    doc = document([echo, echo2, buyer(buyers.url, "ok")])
    h = await start(config=compile_doc(doc, env={"BUYER_KEY": key}))

    reply = await h.route()

    reasons = {a.buyer_id: a.reason for a in reply.attempts}
    assert reasons["echo"] == "bad key [secret]"
    assert reasons["echo2"] == "post rejected: key [secret] is over quota"
    assert key not in str(reply)


async def test_a_caller_that_cancels_mid_post_cannot_get_the_lead_sold_twice(
    buyers: BuyerServer, start: Start
) -> None:
    """The caller gives up while the post is at the buyer (a closed connection, a cancelled
    call): routing finishes anyway, so the sale is remembered and the retry gets it back."""
    posted = asyncio.Event()

    async def slow_post(request: web.Request) -> web.StreamResponse:
        posted.set()
        await asyncio.sleep(0.4)
        return await accept("A-9")(request)

    buyers.on("a", ping=bid(50), post=slow_post)
    h = await start([buyer(buyers.url, "a", post={"timeout_ms": 600})])
    request = pb.RouteLeadRequest(lead_id="cancelled-1", flow="solar", source_id="src-1", fields=GOOD_LEAD)

    call = h.stub.RouteLead(request, timeout=10)
    await asyncio.wait_for(posted.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(0.6)  # the post's answer arrives meanwhile
    retried = await h.stub.RouteLead(request, timeout=10)

    assert retried.outcome == pb.SOLD and retried.replayed
    assert [s.buyer_lead_id for s in retried.sales] == ["A-9"]
    assert len(buyers.got("a", "post")) == 1
