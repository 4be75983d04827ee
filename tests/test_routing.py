"""End to end over real loopback: gRPC client → service → aiohttp buyer servers."""

from __future__ import annotations

import asyncio
import re
import time

import grpc
import pytest
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import (
    BuyerServer,
    accept,
    bid,
    hang,
    no_bid,
    raw,
    redirect,
    reject,
    respond,
    slow,
    trickle,
)
from tests.configs import GOOD_LEAD, PII_VALUES, buyer, fixed_buyer
from tests.conftest import Start

S = pb.AttemptStatus


def by_buyer(reply: pb.RouteLeadResponse) -> dict[str, pb.Attempt]:
    return {a.buyer_id: a for a in reply.attempts}


async def test_highest_bid_wins_and_books_money(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(30), post=accept("A-1"))
    buyers.on("b", ping=bid("45.50"), post=accept("B-77"))
    buyers.on("c", ping=no_bid())
    h = await start([buyer(buyers.url, x) for x in "abc"])

    reply = await h.route()

    assert reply.outcome == pb.SOLD
    assert [(s.buyer_id, s.price, s.buyer_lead_id) for s in reply.sales] == [("b", "45.50", "B-77")]
    assert (reply.cost, reply.revenue, reply.margin) == ("10.00", "45.50", "35.50")
    attempts = by_buyer(reply)
    assert attempts["b"].status == S.POST_ACCEPTED
    assert attempts["a"].status == S.OUTBID and attempts["a"].price == "30.00"
    assert attempts["c"].status == S.NO_BID and attempts["c"].reason == "not interested"
    assert [a.buyer_id for a in reply.attempts] == ["a", "b", "c"]
    assert re.fullmatch(r"[0-9a-f]{32}", reply.trace_id) and reply.trace_id != "0" * 32
    assert buyers.got("a", "post") == []  # only the winner gets the full lead


async def test_pings_carry_no_pii_and_post_carries_the_full_lead(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(40), post=accept())
    buyers.on("b", ping=bid(20))
    mapped = {"fields": {"st": "state", "z": {"field": "zip", "transform": "zip3"}, "src": {"value": "rl"}}}
    h = await start([buyer(buyers.url, "a"), buyer(buyers.url, "b", ping=mapped)])

    reply = await h.route()

    assert reply.outcome == pb.SOLD
    pings = buyers.got(step="ping")
    assert len(pings) == 2
    for ping in pings:
        for value in PII_VALUES:
            assert value.encode() not in ping.body, f"PII {value!r} in the ping to {ping.buyer}"
    assert buyers.got("b", "ping")[0].json() == {"st": "CA", "z": "902", "src": "rl"}
    assert buyers.got("a", "ping")[0].json()["homeowner"] is True
    post = buyers.got("a", "post")[0].json()
    assert post["email"] == "maria.gonzalez@example.com"
    assert post["phone"] == "5552013344"  # normalised
    assert (post["ping_id"], post["price"], post["lead_id"]) == ("ping-40", "40.00", reply.lead_id)


async def test_a_hung_buyer_cannot_push_the_answer_past_the_deadline(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("fast", ping=bid(25), post=accept())
    buyers.on("hung", ping=hang(30))
    h = await start(
        [buyer(buyers.url, "fast"), buyer(buyers.url, "hung", ping={"timeout_ms": 600})], deadline_ms=700
    )

    t0 = time.monotonic()
    reply = await h.route()
    elapsed = time.monotonic() - t0

    assert elapsed < 0.7 + 0.5  # the deadline plus a generous margin for a loaded machine
    assert reply.outcome == pb.SOLD and reply.sales[0].buyer_id == "fast"
    assert by_buyer(reply)["hung"].status == S.TIMED_OUT


async def test_a_trickling_buyer_is_cut_off_by_its_timeout(buyers: BuyerServer, start: Start) -> None:
    buyers.on("loris", ping=trickle(interval=0.05))
    buyers.on("ok", ping=bid(20), post=accept())
    h = await start([buyer(buyers.url, "loris", ping={"timeout_ms": 300}), buyer(buyers.url, "ok")])

    t0 = time.monotonic()
    reply = await h.route()

    assert time.monotonic() - t0 < 0.75 + 0.5
    assert by_buyer(reply)["loris"].status == S.TIMED_OUT
    assert reply.sales[0].buyer_id == "ok"


async def test_the_auction_closes_as_soon_as_every_buyer_answered(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    buyers.on("b", ping=no_bid())
    h = await start(
        [
            buyer(buyers.url, "a", ping={"timeout_ms": 5000}),
            buyer(buyers.url, "b", ping={"timeout_ms": 5000}),
        ],
        deadline_ms=6000,
    )

    t0 = time.monotonic()
    reply = await h.route()

    assert reply.outcome == pb.SOLD
    assert time.monotonic() - t0 < 3.0  # nowhere near the 6 s deadline


BAD_ANSWERS = {
    "html": raw(b"<html><body>Service Unavailable</body></html>", content_type="text/html"),
    "invalid_json": raw(b'{"bid": true, "price": '),
    "http_500": respond({"bid": True, "price": 80}, status=500),
    "empty": raw(b""),
    "json_array": raw(b"[1, 2, 3]"),
    "price_wrong_type": respond({"bid": True, "price": [80]}),
    "price_bool": respond({"bid": True, "price": True}),
    "bid_wrong_type": respond({"bid": {"yes": 1}, "price": 80}),
    "negative_price": respond({"bid": True, "price": -80}),
    "nan_price": respond({"bid": True, "price": "NaN"}),
    "infinite_price": respond({"bid": True, "price": "Infinity"}),
    "absurd_price": respond({"bid": True, "price": 1e30}),
    "nan_literal": raw(b'{"bid": true, "price": NaN}'),
    "missing_price": respond({"bid": True}),
    "huge_body": raw(b'{"bid": true, "price": 80, "pad": "' + b"x" * 200_000 + b'"}'),
    "redirect": redirect("http://example.invalid/elsewhere"),
    "gzip_lie": raw(b"not gzip at all", content_type="application/json"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ANSWERS))
async def test_a_bad_answer_marks_that_attempt_and_the_auction_goes_on(
    kind: str, buyers: BuyerServer, start: Start
) -> None:
    buyers.on("bad", ping=BAD_ANSWERS[kind])
    buyers.on("good", ping=bid(20), post=accept("G-1"))
    h = await start([buyer(buyers.url, "bad"), buyer(buyers.url, "good")])

    reply = await h.route()

    attempt = by_buyer(reply)["bad"]
    assert attempt.status == S.ERROR, (kind, attempt)
    assert attempt.reason, kind
    assert reply.outcome == pb.SOLD and reply.sales[0].buyer_id == "good"
    assert reply.revenue == "20.00"


async def test_a_refused_connection_is_an_error_not_a_failure(buyers: BuyerServer, start: Start) -> None:
    buyers.on("good", ping=bid(20), post=accept())
    dead = {"id": "dead", "ping": {"url": "http://127.0.0.1:9/ping", "timeout_ms": 300},
            "post": {"url": "http://127.0.0.1:9/post", "timeout_ms": 300}}  # fmt: skip
    h = await start([dead, buyer(buyers.url, "good")])

    reply = await h.route()

    assert by_buyer(reply)["dead"].status == S.ERROR
    assert "cannot connect" in by_buyer(reply)["dead"].reason
    assert reply.sales[0].buyer_id == "good"


async def test_a_rejected_post_moves_to_the_next_best_bid(buyers: BuyerServer, start: Start) -> None:
    buyers.on("top", ping=bid(60), post=reject("already have this consumer"))
    buyers.on("second", ping=bid(50), post=respond({"status": "error"}, status=500))
    buyers.on("third", ping=bid(40), post=accept("T-3"))
    buyers.on("fourth", ping=bid(30), post=accept())
    h = await start([buyer(buyers.url, x) for x in ("top", "second", "third", "fourth")])

    reply = await h.route()

    a = by_buyer(reply)
    assert a["top"].status == S.POST_REJECTED and "already have this consumer" in a["top"].reason
    assert a["second"].status == S.POST_ERROR and "HTTP 500" in a["second"].reason
    assert a["third"].status == S.POST_ACCEPTED
    assert a["fourth"].status == S.OUTBID
    assert [(s.buyer_id, s.price, s.buyer_lead_id) for s in reply.sales] == [("third", "40.00", "T-3")]
    assert len(buyers.got("fourth", "post")) == 0


async def test_every_post_rejected_leaves_the_lead_unsold(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(60), post=reject())
    buyers.on("b", ping=bid(50), post=reject())
    h = await start([buyer(buyers.url, "a"), buyer(buyers.url, "b")])

    reply = await h.route()

    assert reply.outcome == pb.UNSOLD and not reply.sales
    assert (reply.cost, reply.revenue, reply.margin) == ("0.00", "0.00", "0.00")  # pay_on: sold


async def test_bids_under_the_floor_are_not_taken(buyers: BuyerServer, start: Start) -> None:
    buyers.on("cheap", ping=bid("9.99"))
    h = await start([buyer(buyers.url, "cheap")], floor="10.00")

    reply = await h.route()

    assert reply.outcome == pb.UNSOLD
    assert by_buyer(reply)["cheap"].status == S.BELOW_FLOOR
    assert buyers.got("cheap", "post") == []


async def test_tiers_are_walked_top_down(buyers: BuyerServer, start: Start) -> None:
    buyers.on("premium", ping=bid(30), post=accept())
    buyers.on("standard", ping=bid(90), post=accept())
    h = await start(
        [buyer(buyers.url, "premium"), buyer(buyers.url, "standard")], tiers=[["premium"], ["standard"]]
    )

    reply = await h.route()

    assert reply.sales[0].buyer_id == "premium"
    assert by_buyer(reply)["standard"].status == S.OUTBID
    assert by_buyer(reply)["standard"].tier == "t2"


async def test_a_fixed_price_buyer_takes_a_direct_post_without_a_ping(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("bidder", ping=no_bid())
    buyers.on("catchall", post=accept("C-9"))
    h = await start([buyer(buyers.url, "bidder"), fixed_buyer(buyers.url, "catchall", "12.50")])

    reply = await h.route()

    assert [(s.buyer_id, s.price) for s in reply.sales] == [("catchall", "12.50")]
    assert buyers.got("catchall", "ping") == []
    assert by_buyer(reply)["catchall"].status == S.POST_ACCEPTED


async def test_test_leads_are_decided_but_never_posted(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    buyers.on("b", ping=bid(20), post=accept())
    h = await start([buyer(buyers.url, "a"), buyer(buyers.url, "b")])

    reply = await h.route(test=True)

    assert reply.test
    assert [(s.buyer_id, s.price) for s in reply.sales] == [("a", "30.00")]
    assert by_buyer(reply)["a"].status == S.BID and "not posted" in by_buyer(reply)["a"].reason
    assert by_buyer(reply)["b"].status == S.OUTBID
    assert buyers.got(step="post") == []


async def test_a_capped_buyer_is_not_pinged(buyers: BuyerServer, start: Start) -> None:
    buyers.on("capped", ping=bid(50), post=accept())
    buyers.on("other", ping=bid(20), post=accept())
    h = await start([buyer(buyers.url, "capped", caps={"day": 1}), buyer(buyers.url, "other")])

    first = await h.route(GOOD_LEAD | {"email": "one@example.com"})
    second = await h.route(GOOD_LEAD | {"email": "two@example.com"})

    assert first.sales[0].buyer_id == "capped"
    assert by_buyer(second)["capped"].status == S.SKIPPED_CAP
    assert second.sales[0].buyer_id == "other"
    assert len(buyers.got("capped", "ping")) == 1


async def test_a_cap_is_never_exceeded_under_concurrency(buyers: BuyerServer, start: Start) -> None:
    buyers.on("capped", ping=slow(0.05, bid(50)), post=accept())
    h = await start([buyer(buyers.url, "capped", caps={"day": 3})])

    replies = await asyncio.gather(*(h.route(GOOD_LEAD | {"email": f"c{i}@example.com"}) for i in range(12)))

    assert sum(r.outcome == pb.SOLD for r in replies) == 3
    assert len(buyers.got("capped", "post")) == 3


async def test_a_repeated_lead_id_is_answered_once(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=slow(0.1, bid(30)), post=accept("A-1"))
    h = await start([buyer(buyers.url, "a")])

    first, concurrent = await asyncio.gather(h.route(lead_id="abc-123"), h.route(lead_id="abc-123"))
    later = await h.route(lead_id="abc-123")

    assert first.lead_id == "abc-123"
    assert first.outcome == concurrent.outcome == later.outcome == pb.SOLD
    assert later.replayed and later.sales == first.sales
    assert len(buyers.got("a", "ping")) == 1
    assert len(buyers.got("a", "post")) == 1


async def test_an_empty_lead_id_is_generated(buyers: BuyerServer, start: Start) -> None:
    h = await start([buyer(buyers.url, "a")])

    one, two = await h.route(GOOD_LEAD | {"email": "x1@example.com"}), await h.route(GOOD_LEAD)

    assert one.lead_id and two.lead_id and one.lead_id != two.lead_id


async def test_a_duplicate_lead_asks_no_buyer(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    h = await start([buyer(buyers.url, "a")], dedupe={"fields": ["email", "phone"], "days": 30})

    first = await h.route()
    again = await h.route(GOOD_LEAD | {"first_name": "Other"})

    assert first.outcome == pb.SOLD
    assert again.outcome == pb.DUPLICATE and not again.attempts
    assert len(buyers.got("a", "ping")) == 1


async def test_a_buyer_is_not_offered_a_consumer_it_already_bought(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    buyers.on("b", ping=bid(20), post=accept())
    h = await start(
        [buyer(buyers.url, "a", dedupe_days=90), buyer(buyers.url, "b")],
        dedupe={"fields": ["email"], "days": 0},  # identity only: no flow-level rejection
    )

    first = await h.route()
    repeat = await h.route(GOOD_LEAD | {"phone": "5559990000"})

    assert first.sales[0].buyer_id == "a"
    assert by_buyer(repeat)["a"].status == S.DUPLICATE_FOR_BUYER
    assert repeat.sales[0].buyer_id == "b"
    assert len(buyers.got("a", "ping")) == 1


async def test_invalid_lead_names_every_bad_field(buyers: BuyerServer, start: Start) -> None:
    h = await start([buyer(buyers.url, "a")])
    bad = GOOD_LEAD | {"email": "not-an-email", "zip": "9021", "credit_range": "800+", "favourite": "x"}
    del bad["state"]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.route(bad)

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = err.value.details() or ""
    for name in ("fields.email", "fields.zip", "fields.credit_range", "fields.favourite", "fields.state"):
        assert name in message, message
    assert "not-an-email" not in message  # the error never echoes lead values
    assert buyers.received == []


async def test_missing_flow_and_source_are_invalid(buyers: BuyerServer, start: Start) -> None:
    h = await start([buyer(buyers.url, "a")])

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.route(flow="", source_id="")

    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "flow: required" in (err.value.details() or "")
    assert "source_id: required" in (err.value.details() or "")


@pytest.mark.parametrize(("flow", "source"), [("nope", "src-1"), ("solar", "nope")])
async def test_unknown_flow_or_source_is_not_found(
    flow: str, source: str, buyers: BuyerServer, start: Start
) -> None:
    h = await start([buyer(buyers.url, "a")])

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.route(flow=flow, source_id=source)

    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'nope'" in (err.value.details() or "")


async def test_a_caller_deadline_shorter_than_the_flows_is_honoured(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("slow", ping=slow(0.6, bid(30)))
    buyers.on("fast", ping=bid(10), post=accept())
    h = await start([buyer(buyers.url, "slow", ping={"timeout_ms": 700}), buyer(buyers.url, "fast")])

    reply = await h.route(deadline_s=0.4)

    assert by_buyer(reply)["slow"].status == S.TIMED_OUT
    assert reply.sales[0].buyer_id == "fast"


async def test_api_keys_come_from_the_environment(buyers: BuyerServer, start: Start) -> None:
    from tests.configs import compile_doc, document

    buyers.on("a", ping=bid(30), post=accept())
    doc = document([buyer(buyers.url, "a", ping={"headers": {"X-API-Key": "${A_KEY}"}})])
    h = await start(config=compile_doc(doc, env={"A_KEY": "s3cret-from-env"}))

    await h.route()

    assert buyers.got("a", "ping")[0].headers["X-API-Key"] == "s3cret-from-env"
