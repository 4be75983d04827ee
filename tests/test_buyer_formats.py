"""Buyer formats: every misconfiguration named by its path, and XML / text buyers end to end."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import yaml
from aiohttp import web
from routelead.buyers.base import BadAnswer, HttpAnswer
from routelead.config.loader import ConfigError, load_config_bytes
from routelead.domain.mapping import Transaction
from routelead.v1 import routelead_pb2 as pb

from tests.buyers import BuyerServer, accept, bid, raw
from tests.configs import PII_VALUES, buyer, compile_doc, document
from tests.conftest import Start

URL = "http://127.0.0.1:1/x"


def one_buyer(ping: dict[str, Any] | None = None, post: dict[str, Any] | None = None) -> dict[str, Any]:
    return document(
        [
            {
                "id": "a",
                "ping": {"url": URL, "timeout_ms": 400, **(ping or {})},
                "post": {"url": URL, "timeout_ms": 300, **(post or {})},
            }
        ]
    )


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        compile_doc(doc)
    return err.value.problems


@pytest.mark.parametrize("fmt", ["json", "form", "xml", "query"])
def test_a_ping_may_not_name_a_pii_field_in_any_format(fmt: str) -> None:
    found = problems(one_buyer(ping={"format": fmt, "fields": {"e": "email", "tel": {"field": "phone"}}}))
    assert "buyers[0].ping.fields.e: 'email' is PII and may not be sent in a ping" in found
    assert "buyers[0].ping.fields.tel: 'phone' is PII and may not be sent in a ping" in found


def test_request_format_mistakes_are_named_by_path() -> None:
    found = problems(
        one_buyer(
            ping={
                "method": "GET",
                "format": "form",
                "fields": {"a": "state", "carried": {"from": "ping.token"}},
            },
            post={
                "format": "xml",
                "xml": {"root": "1bad"},
                "fields": {
                    "Lead/Zip": "zip",
                    "Lead/Zip/Plus4": {"value": "0000"},
                    "bad name/x": "state",
                    "born": {"field": "state", "date_format": "%m/%d/%Y"},
                    "when": {"field": "zip", "date_format": "%H:%M %s"},
                    "tok": {"from": "ping.auction_token"},
                },
            },
        )
    )
    assert "buyers[0].ping.method: GET carries no body: use `format: query` (not form)" in found
    assert "buyers[0].ping.fields.carried: `from: ping.token` exists only for the post" in found
    assert any(p.startswith("buyers[0].post.xml.root: '1bad' is not an XML") for p in found)
    assert "buyers[0].post.fields.Lead/Zip/Plus4: nests under 'Lead/Zip', which is already a value" in found
    assert any(p.startswith("buyers[0].post.fields.bad name/x: 'bad name'") for p in found)
    assert "buyers[0].post.fields.born: `date_format` needs a date field; 'state' is a state" in found
    assert any(
        p.startswith("buyers[0].post.fields.when.date_format: unsupported directive %H") for p in found
    )
    assert (
        "buyers[0].post.fields.tok: `from: ping.auction_token` needs `ping.answer.carry.auction_token`"
        " on this buyer"
    ) in found


def test_answer_format_mistakes_are_named_by_path() -> None:
    found = problems(
        one_buyer(
            ping={
                "answer": {
                    "format": "text",
                    "pattern": "^(bid)|(\\d+)$",
                    "statuses": {"409": "rejected", "abc": "error"},
                    "carry": {"token": "tok"},
                }
            },
            post={
                "answer": {
                    "format": "xml",
                    "delimiter": "|",
                    "accepted": {"path": "Result//[1]", "values": ["ok"]},
                    "lead_id": "Lead/@",
                }
            },
        )
    )
    assert any("ping.answer.pattern: the pattern needs named groups" in p for p in found)
    assert (
        "buyers[0].ping.answer.statuses.409: 'rejected' is not an outcome here (use error, no_bid, read)"
        in found
    )
    assert "buyers[0].ping.answer.statuses.abc: an HTTP status (409) or a class (4xx)" in found
    assert any(
        p.startswith("buyers[0].post.answer: `pattern`, `delimiter` and `columns` are for text")
        for p in found
    )
    assert any(p.startswith("buyers[0].post.answer.accepted.path: 'Result//[1]'") for p in found)
    assert any(p.startswith("buyers[0].post.answer.lead_id: 'Lead/@'") for p in found)


def test_text_answers_must_name_the_values_they_are_read_for() -> None:
    found = problems(
        one_buyer(
            ping={
                "answer": {"format": "text", "delimiter": "|", "columns": ["bid", "amount"], "reason": "why"}
            },
            post={"answer": {"format": "text", "pattern": "(?P<state>\\w+)"}},
        )
    )
    assert any(
        p.startswith("buyers[0].ping.answer.price: 'price' is not a named group or column") for p in found
    )
    assert any(p.startswith("buyers[0].ping.answer.reason: 'why' is not a named group") for p in found)
    assert any(p.startswith("buyers[0].post.answer.accepted.path: 'status' is not") for p in found)
    # Defaults a text answer does not have (ping_id, exclusive …) are simply not read.
    assert not any("ping_id" in p or "exclusive" in p for p in found)


def test_a_value_map_default_needs_a_map_and_shaping_needs_a_field() -> None:
    found = problems(
        one_buyer(
            ping={
                "fields": {"x": {"value": "1", "transform": "upper"}, "y": {"field": "state", "default": "z"}}
            }
        )
    )
    assert any("apply to a `field`" in p for p in found)
    assert any("give `map` too" in p for p in found)


def test_a_huge_answer_excerpt_stays_short() -> None:
    config = compile_doc(one_buyer(ping={"answer": {"format": "xml"}}))
    parser = config.buyers["a"].ping_parser
    assert parser is not None
    with pytest.raises(BadAnswer) as err:
        parser.parse(HttpAnswer(200, b"<r>" + b"x" * 100_000, "text/xml"))
    assert len(str(err.value)) < 140


async def test_a_form_buyer_answering_xml_and_a_text_buyer_end_to_end(
    buyers: BuyerServer, start: Start
) -> None:
    """Real service, real aiohttp buyers on loopback: form posts answered in XML and in plain text."""
    seen: list[dict[str, str]] = []

    async def xml_ping(request: web.Request) -> web.StreamResponse:
        form = dict(parse_qsl((await request.read()).decode()))
        seen.append(form)
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        return web.Response(
            text=f"<response><result>BID</result><price>51.20</price><token>{form['st']}-tok</token></response>",
            content_type="text/xml",
        )

    async def xml_post(request: web.Request) -> web.StreamResponse:
        form = dict(parse_qsl((await request.read()).decode()))
        seen.append(form)
        ok = form.get("token") == "CA-tok" and form.get("email") == "maria.gonzalez@example.com"
        status = "Accepted" if ok else "Rejected"
        return web.Response(
            text=f'<response status="{status}"><id>XML-7</id></response>', content_type="text/xml"
        )

    buyers.on("xmlbuyer", ping=xml_ping, post=xml_post)
    buyers.on("textbuyer", ping=raw(b"bid|44.00|T-9", content_type="text/plain"))
    buyers.on(
        "bomb", ping=raw(b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><r><bid>&a;</bid></r>')
    )
    form_xml = {
        "ping": {
            "format": "form",
            "fields": {"st": "state", "z": {"field": "zip", "transform": "zip3"}},
            "answer": {
                "format": "xml",
                "bid": {"path": "result", "values": ["bid"]},
                "carry": {"token": "token"},
            },
        },
        "post": {
            "format": "form",
            "fields": {"token": {"from": "ping.token"}, "email": "email", "price": {"from": "price"}},
            "answer": {
                "format": "xml",
                "accepted": {"path": "@status", "values": ["accepted"]},
                "lead_id": "id",
            },
        },
    }
    text = {
        "ping": {
            "format": "form",
            "answer": {"format": "text", "delimiter": "|", "columns": ["bid", "price", "ping_id"]},
        }
    }
    bomb = {"ping": {"answer": {"format": "xml"}}}
    h = await start(
        [
            buyer(buyers.url, "xmlbuyer", **form_xml),
            buyer(buyers.url, "textbuyer", **text),
            buyer(buyers.url, "bomb", **bomb),
        ]
    )

    reply = await h.route()

    assert reply.outcome == pb.SOLD
    assert [(s.buyer_id, s.price, s.buyer_lead_id) for s in reply.sales] == [("xmlbuyer", "51.20", "XML-7")]
    attempts = {a.buyer_id: a for a in reply.attempts}
    assert attempts["textbuyer"].status == pb.OUTBID and attempts["textbuyer"].price == "44.00"
    assert attempts["bomb"].status == pb.ERROR
    assert attempts["bomb"].reason == "bad answer: XML with a DTD or entity declarations refused"
    assert seen[0] == {"st": "CA", "z": "902"}
    assert seen[1] == {"token": "CA-tok", "email": "maria.gonzalez@example.com", "price": "51.20"}
    text_ping = buyers.got("textbuyer", "ping")[0]
    assert text_ping.headers["Accept"] == "text/plain"
    for ping in buyers.got(step="ping"):
        for value in PII_VALUES:
            assert value.encode() not in ping.body


async def test_a_backtracking_pattern_and_a_crafted_answer_cannot_stall_the_service(
    buyers: BuyerServer, start: Start
) -> None:
    # With Python's re this pattern takes 0.37 s on 22 characters and doubles with each one more:
    # on these 64 the event loop, and every lead in the process, would stall for days.
    buyers.on("crafted", ping=raw(b"a" * 64 + b"!", content_type="text/plain"))
    buyers.on("plain", ping=bid("30.00"), post=accept("P-1"))
    greedy = {
        "ping": {"answer": {"format": "text", "pattern": r"^(?P<bid>(?:\w+\s?)+)\|(?P<price>\d+\.\d\d)$"}}
    }
    h = await start([buyer(buyers.url, "crafted", **greedy), buyer(buyers.url, "plain")])

    reply = await h.route()

    assert reply.outcome == pb.SOLD and [s.buyer_id for s in reply.sales] == ["plain"]
    crafted = next(a for a in reply.attempts if a.buyer_id == "crafted")
    assert crafted.status == pb.ERROR and "does not match the configured pattern" in crafted.reason


def test_a_pattern_re2_cannot_run_in_linear_time_is_refused_by_path() -> None:
    doc = copy.deepcopy(one_buyer(ping={"answer": {"format": "text", "pattern": r"(?P<bid>yes)(?=!)"}}))
    doc["lead"]["fields"]["zip"]["pattern"] = r"^(\d)\1{4}$"

    found = problems(doc)

    assert any(p.startswith("buyers[0].ping.answer.pattern: not a valid regular expression") for p in found)
    assert any(p.startswith("lead.fields.zip.pattern: not a valid regular expression") for p in found)
    assert any("no backreferences or lookaround" in p for p in found)


def test_the_readme_buyer_format_example_loads() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Buyer formats", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    entry = yaml.safe_load(block.replace("  - id:", "- id:", 1).replace("\n    ", "\n  "))
    doc = document(entry)
    doc["lead"]["fields"] = {**doc["lead"]["fields"], "birth_date": {"type": "date", "pii": True}}
    text = yaml.safe_dump(doc, sort_keys=False).encode()
    config = load_config_bytes(text, "README.md", {"SUNVALLEY_KEY": "k"})
    ping = config.buyers["sunvalley"].ping
    assert ping is not None
    request = ping.request(
        {"state": "CA", "zip": "90210", "homeowner": "true", "credit_range": "600-650"}, Transaction("L")
    )
    assert request.body == b"st=California&zip=90210&own=1&credit=fair"
    assert ("X-Key", "k") in request.headers
