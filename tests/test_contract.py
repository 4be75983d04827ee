"""The contract with buyers and callers, against hostile buyers: the bid is the price, an exclusive
lead never reaches two buyers, and a lead_id means one request.

Real buyer servers on loopback, the real service over gRPC with its books (SQLite); every check
reads the books and what the buyer servers received, not only the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from routelead.api.server import Service
from routelead.records.ledger import Ledger
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, hang, raw, redirect, respond
from tests.configs import GOOD_LEAD, PII_VALUES, buyer, compile_doc, document, fixed_buyer

S = pb.AttemptStatus
# 99.00499999999999999999999999999999999999: half-up to cents it is 99.00; through a float (99.005)
# it would be 99.01.
FORTY_DIGITS = b"99.00499999999999999999999999999999999999"


class Booked:
    """A service with its books; `route` sends one lead."""

    def __init__(self, ledger: Ledger, stub: pb_grpc.RouteLeadStub) -> None:
        self.ledger = ledger
        self.stub = stub

    async def route(
        self, lead_id: str, fields: dict[str, str] | None = None, **kw: Any
    ) -> pb.RouteLeadResponse:
        request = pb.RouteLeadRequest(
            lead_id=lead_id,
            flow=kw.pop("flow", "solar"),
            source_id=kw.pop("source_id", "src-1"),
            fields=GOOD_LEAD if fields is None else fields,
            **kw,
        )
        reply: pb.RouteLeadResponse = await self.stub.RouteLead(request, timeout=10)
        return reply

    async def sales(self, key: str) -> list[dict[str, Any]]:
        return (await self.ledger.lead(key)).sales


Open = Callable[..., Awaitable[Booked]]


@pytest.fixture
async def books(tmp_path: Path) -> AsyncIterator[Open]:
    opened: list[tuple[Service, grpc.aio.Channel, Ledger]] = []

    async def go(buyers: list[dict[str, Any]], **flow: Any) -> Booked:
        doc = document(buyers, dedupe=None, **flow)
        doc["sources"].append({"id": "src-2", "cost": "0"})
        ledger = await Ledger.open(f"sqlite:///{tmp_path / f'books{len(opened)}.db'}")
        service = Service(compile_doc(doc), ledger=ledger)
        await service.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        opened.append((service, channel, ledger))
        return Booked(ledger, pb_grpc.RouteLeadStub(channel))

    yield go
    for service, channel, ledger in opened:
        await channel.close()
        await service.stop(grace=0.5)
        await ledger.close()


def _post_price(price: object) -> Any:
    return respond({"status": "accepted", "lead_id": "B-7", "price": price})


def _priced(buyers: BuyerServer, buyer_id: str, **post: Any) -> dict[str, Any]:
    return buyer(buyers.url, buyer_id, post={"answer": {"price": "price"}, **post})


def _disputes() -> float:
    return REGISTRY.get_sample_value("routelead_price_disputes_total", {"buyer": "top"}) or 0.0


# --- The bid is the contract ---------------------------------------------------------------------


@pytest.mark.parametrize(("stated", "shown"), [("0.001", "0.00"), ("150.00", "150.00")])
async def test_a_post_answer_that_reprices_is_booked_at_the_bid_and_flagged(
    stated: str, shown: str, buyers: BuyerServer, books: Open
) -> None:
    buyers.on("top", ping=bid("99.00"), post=_post_price(stated))
    buyers.on("low", ping=bid("40.00"), post=accept())
    s = await books([_priced(buyers, "top"), buyer(buyers.url, "low")])
    before = _disputes()

    replies = [await s.route(f"reprice-{stated}-{n}", {**GOOD_LEAD, "email": f"r{n}@x.io"}) for n in range(3)]

    for reply in replies:
        assert reply.outcome == pb.SOLD and reply.revenue == "99.00"
        assert [(x.buyer_id, x.price, x.stated_price) for x in reply.sales] == [("top", "99.00", shown)]
        top = next(a for a in reply.attempts if a.buyer_id == "top")
        assert "price dispute" in top.reason and shown in top.reason
        (row,) = await s.sales(reply.lead_id)
        assert (row["price"], row["stated_price"], row["settlement"]) == (
            Decimal("99.00"),
            Decimal(shown),
            "sold",
        )
    assert _disputes() - before == 3
    now = datetime.now(UTC)
    (top_totals,) = await s.ledger.totals("buyer", now - timedelta(hours=1), now + timedelta(hours=1), "top")
    assert (top_totals.gross_revenue, top_totals.disputes) == (Decimal("297.00"), 3)
    assert not buyers.got("low", "post")


async def test_a_price_on_post_buyer_pays_its_stated_price_unless_it_is_below_the_floor(
    buyers: BuyerServer, books: Open
) -> None:
    buyers.on("top", ping=bid("99.00"))
    s = await books([_priced(buyers, "top", price_on_post=True)], floor="50.00")

    buyers.on("top", post=_post_price("120.00"))
    above = await s.route("pop-above")
    buyers.on("top", post=_post_price("0.001"))
    below = await s.route("pop-below", {**GOOD_LEAD, "email": "b@x.io"})

    assert (above.revenue, above.sales[0].stated_price) == ("120.00", "")
    assert (below.revenue, below.sales[0].stated_price) == ("99.00", "0.00")
    assert "below the floor" in next(a for a in below.attempts if a.buyer_id == "top").reason
    assert [(r["price"], r["stated_price"]) for r in await s.sales("pop-above")] == [
        (Decimal("120.00"), None)
    ]
    assert [(r["price"], r["stated_price"]) for r in await s.sales("pop-below")] == [
        (Decimal("99.00"), Decimal("0.00"))
    ]


async def test_a_fixed_price_buyer_keeps_its_price_from_the_post_answer(
    buyers: BuyerServer, books: Open
) -> None:
    buyers.on("flat", post=_post_price("31.25"))
    flat = fixed_buyer(buyers.url, "flat", "30.00")
    flat["post"]["answer"] = {"price": "price"}
    s = await books([flat])

    reply = await s.route("flat-1")

    assert (reply.revenue, reply.sales[0].stated_price) == ("31.25", "")


async def test_prices_with_forty_digits_are_read_as_decimal_text_never_through_a_float(
    buyers: BuyerServer, books: Open
) -> None:
    buyers.on("top", ping=raw(b'{"bid": true, "price": ' + FORTY_DIGITS + b', "ping_id": "p"}'))
    buyers.on("top", post=raw(b'{"status": "accepted", "lead_id": "B", "price": ' + FORTY_DIGITS + b"}"))
    buyers.on("text", ping=respond({"bid": True, "price": FORTY_DIGITS.decode(), "ping_id": "q"}))
    buyers.on("huge", ping=raw(b'{"bid": true, "price": 1234567890123456789012345678901234567890}'))
    s = await books(
        [_priced(buyers, "top", price_on_post=True), buyer(buyers.url, "text"), buyer(buyers.url, "huge")]
    )

    reply = await s.route("forty")

    bids = {a.buyer_id: a for a in reply.attempts}
    assert bids["top"].price == bids["text"].price == "99.00"  # a float would make both 99.01
    assert "exceeds the ceiling" in bids["huge"].reason
    assert (reply.sales[0].buyer_id, reply.revenue) == ("top", "99.00")
    assert [r["price"] for r in await s.sales("forty")] == [Decimal("99.00")]


# --- An exclusive lead never reaches two buyers ----------------------------------------------------

UNKNOWN_POSTS: dict[str, Any] = {
    "accepted_unreadable_price": respond({"status": "accepted", "lead_id": "X", "price": "ninety"}),
    "accepted_price_object": respond({"status": "accepted", "lead_id": "X", "price": {"usd": 99}}),
    "redirect_after_receipt": redirect("http://127.0.0.1:9/elsewhere"),
    "timeout_after_sending": hang(5),
}


@pytest.mark.parametrize("kind", sorted(UNKNOWN_POSTS))
async def test_a_post_with_an_unknown_outcome_holds_the_exclusive_lead(
    kind: str, buyers: BuyerServer, books: Open
) -> None:
    buyers.on("top", ping=bid("99.00"), post=UNKNOWN_POSTS[kind])
    buyers.on("next", ping=bid("60.00"), post=accept())
    buyers.on("last", ping=bid("40.00"), post=accept())
    s = await books([_priced(buyers, "top"), buyer(buyers.url, "next"), buyer(buyers.url, "last")])

    replies = [await s.route(f"{kind}-{n}", {**GOOD_LEAD, "email": f"u{n}@x.io"}) for n in range(3)]

    # 0 exclusive leads accepted by two buyers: nobody else was even offered one.
    assert not buyers.got("next", "post") and not buyers.got("last", "post")
    assert len(buyers.got("top", "post")) == 3
    for reply in replies:
        assert reply.outcome == pb.UNSETTLED and not reply.sales and reply.revenue == "0.00"
        attempts = {a.buyer_id: a for a in reply.attempts}
        assert attempts["top"].status == S.POST_ERROR and attempts["top"].unsettled
        assert attempts["next"].status == S.NOT_OFFERED and "unknown outcome" in attempts["next"].reason
        assert [(r["buyer_id"], r["settlement"]) for r in await s.sales(reply.lead_id)] == [
            ("top", "unsettled")
        ]


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
async def test_an_http_error_status_on_the_post_is_an_answer_and_the_next_bid_sells(
    status: int, buyers: BuyerServer, books: Open
) -> None:
    buyers.on("top", ping=bid("99.00"), post=respond({"status": "accepted"}, status=status))
    buyers.on("next", ping=bid("60.00"), post=accept())
    s = await books([buyer(buyers.url, "top", caps={"day": 5}), buyer(buyers.url, "next")])

    reply = await s.route(f"status-{status}")

    top = next(a for a in reply.attempts if a.buyer_id == "top")
    assert top.status == S.POST_ERROR and not top.unsettled and f"HTTP {status}" in top.reason
    assert [(x.buyer_id, x.price) for x in reply.sales] == [("next", "60.00")]
    assert [(r["buyer_id"], r["settlement"]) for r in await s.sales(reply.lead_id)] == [("next", "sold")]


async def test_a_post_that_never_left_is_tried_once_more_then_the_next_bid_sells(
    buyers: BuyerServer, books: Open
) -> None:
    buyers.on("top", ping=bid("99.00"))
    buyers.on("next", ping=bid("60.00"), post=accept())
    refused = buyer(buyers.url, "top", post={"url": "http://127.0.0.1:9/post"})
    s = await books([refused, buyer(buyers.url, "next")])

    reply = await s.route("refused")

    top = next(a for a in reply.attempts if a.buyer_id == "top")
    assert top.status == S.POST_ERROR and not top.unsettled
    assert "never left" in top.reason and "tried once more" in top.reason and "cannot connect" in top.reason
    assert [x.buyer_id for x in reply.sales] == ["next"]


async def test_a_shared_lead_counts_an_unknown_post_as_a_buyer_that_may_have_it(
    buyers: BuyerServer, books: Open
) -> None:
    buyers.on("a", ping=bid("90.00"), post=respond({"status": "accepted", "price": "bad"}))
    buyers.on("b", ping=bid("80.00"), post=accept())
    buyers.on("c", ping=bid("70.00"), post=accept())
    buyers.on("x", ping=bid("60.00", exclusive=True), post=accept())
    s = await books(
        [_priced(buyers, "a"), buyer(buyers.url, "b"), buyer(buyers.url, "c"), buyer(buyers.url, "x")],
        max_buyers=2,
    )

    reply = await s.route("shared")

    # Two slots: one sold, one held by the unknown post; the exclusive bid never joins.
    assert reply.outcome == pb.SOLD and [x.buyer_id for x in reply.sales] == ["b"]
    assert not buyers.got("c", "post") and not buyers.got("x", "post")
    assert {(r["buyer_id"], r["settlement"]) for r in await s.sales("shared")} == {
        ("a", "unsettled"),
        ("b", "sold"),
    }


async def test_an_exclusive_bid_in_a_shared_flow_is_held_too(buyers: BuyerServer, books: Open) -> None:
    buyers.on("top", ping=bid("99.00", exclusive=True), post=respond({"status": "accepted", "price": "?"}))
    buyers.on("b", ping=bid("30.00"), post=accept())
    buyers.on("c", ping=bid("20.00"), post=accept())
    s = await books([_priced(buyers, "top"), buyer(buyers.url, "b"), buyer(buyers.url, "c")], max_buyers=3)

    reply = await s.route("exclusive-in-shared")

    assert reply.outcome == pb.UNSETTLED and not buyers.got("b", "post") and not buyers.got("c", "post")


# --- A lead_id means one request -----------------------------------------------------------------


async def test_a_repeat_with_other_fields_flow_or_source_is_refused_naming_what_differs(
    buyers: BuyerServer, books: Open
) -> None:
    buyers.on("top", ping=bid("50.00"), post=accept())
    s = await books([buyer(buyers.url, "top")])
    first = await s.route("one-request")

    same = await s.route("one-request")
    assert same.replayed and same.sales[0].price == first.sales[0].price

    other = {**GOOD_LEAD, "email": "someone.else@example.com", "zip": "10001"}
    repeats: list[tuple[dict[str, Any], str]] = [
        ({"fields": other}, "fields differ: email, zip"),
        ({"source_id": "src-2"}, "source_id differs"),
    ]
    for kw, says in repeats:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await s.route("one-request", **kw)
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        details = refused.value.details() or ""
        assert says in details and "one-request" in details
        assert not any(v in details for v in (*PII_VALUES, "someone.else", "10001", "src-1"))
    assert len(buyers.got("top", "post")) == 1  # refused repeats were never routed


async def test_a_test_call_never_takes_the_answer_slot_of_the_real_lead(
    buyers: BuyerServer, books: Open
) -> None:
    buyers.on("top", ping=bid("50.00"), post=accept("B-real"))
    s = await books([buyer(buyers.url, "top")])

    tried = await s.route("L-77", test=True)
    assert tried.test and tried.outcome == pb.SOLD and not buyers.got("top", "post")

    real = await s.route("L-77")
    assert not real.test and not real.replayed and real.outcome == pb.SOLD
    assert [r.json()["lead_id"] for r in buyers.got("top", "post")] == ["L-77"]

    again, tried_again = await s.route("L-77"), await s.route("L-77", test=True)
    assert again.replayed and not again.test and tried_again.replayed and tried_again.test
    assert len(buyers.got("top", "post")) == 1
    # The books hold both, each under its own key: the real sale with its revenue.
    assert [(r["settlement"], r["test"]) for r in await s.sales("L-77")] == [("sold", False)]
    assert [(r["settlement"], r["test"]) for r in await s.sales("~L-77")] == [("sold", True)]
    assert (await s.ledger.lead("L-77")).lead["revenue"] == Decimal("50.00")  # type: ignore[index]
