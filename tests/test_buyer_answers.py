"""Parsing buyer answers: what counts as a bid, a price, an acceptance."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from routelead.buyers.base import BadAnswer, HttpAnswer
from routelead.buyers.json_protocol import Match, Path, PingParser, PostParser, scrub

PING = PingParser(
    bid=Match(Path.parse("bid"), frozenset({True, "yes", "true"})),
    price=Path.parse("price"),
    ping_id=Path.parse("ping_id"),
    exclusive=Path.parse("exclusive"),
    reason=Path.parse("reason"),
    conditions=Path.parse("conditions"),
    no_bid_statuses=frozenset({204}),
    max_price=Decimal("500"),
)
POST = PostParser(Match(Path.parse("result.status"), frozenset({"accepted"})), Path.parse("result.id"),
                  Path.parse("result.reason"), None, Decimal("500"))  # fmt: skip


def answer(doc: object, status: int = 200) -> HttpAnswer:
    return HttpAnswer(status, orjson.dumps(doc), "application/json")


def test_a_bid_with_ids_conditions_and_string_price() -> None:
    a = PING.parse(answer({"bid": "YES", "price": "45.10", "ping_id": 77, "exclusive": "true",
                           "conditions": {"max_age": 5}}))  # fmt: skip
    assert (a.bid, a.price, a.ping_id, a.exclusive) == (True, Decimal("45.10"), "77", True)
    assert a.conditions == {"max_age": 5}


def test_no_bid_forms() -> None:
    assert not PING.parse(answer({"bid": False, "reason": "full"})).bid
    assert not PING.parse(HttpAnswer(204, b"", "")).bid


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"<html>oops</html>", 200, "HTML"),
        (b"{", 200, "invalid JSON"),
        (b"", 200, "empty"),
        (b"   ", 200, "empty"),
        (b'"bid"', 200, "string"),
        (b'{"price": 5}', 200, "no 'bid'"),
        (b'{"bid": [true]}', 200, "array"),
        (b'{"bid": true, "price": 501}', 200, "ceiling"),
        (b'{"bid": true, "price": 5, "conditions": [1]}', 200, "array"),
        (b'{"bid": true, "price": 5}', 503, "HTTP 503"),
        (b'{"bid": true, "price": 5}', 302, "HTTP 302"),
    ],
)
def test_unusable_answers_name_what_is_wrong(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(BadAnswer, match=reason):
        PING.parse(HttpAnswer(status, body, "application/json"))


def test_post_answers() -> None:
    ok = POST.parse(answer({"result": {"status": "Accepted", "id": "X-1"}}))
    assert (ok.accepted, ok.buyer_lead_id) == (True, "X-1")
    no = POST.parse(answer({"result": {"status": "rejected", "reason": "dupe"}}))
    assert (no.accepted, no.reason) == (False, "dupe")


def test_buyer_text_is_bounded_and_scrubbed_of_contact_details() -> None:
    text = scrub("dupe of jane@example.com / (555) 123-4567 \x00" + "x" * 500)
    assert "jane@" not in text and "123-4567" not in text and "\x00" not in text
    assert len(text) <= 200
