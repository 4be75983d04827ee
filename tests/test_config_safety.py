"""Configuration cannot silently mean something else: what it says is what buyers receive and what
RouteLead does, or the file is refused with the path and the fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from routelead.config.loader import ConfigError, load_config_bytes
from routelead.domain import identity
from routelead.domain.mapping import TRANSFORMS
from routelead.domain.rules import Facts, compile_rule
from routelead.telemetry.tracing import add_processor
from routelead.v1 import routelead_pb2 as pb
from routelead_client.cli_buyers import parse_buyer_file
from routelead_client.cli_common import LocalError

from tests.buyers import BuyerServer, accept, bid, reject, respond
from tests.configs import GOOD_LEAD, LEAD_FIELDS, buyer, compile_doc, document
from tests.conftest import Start

S = pb.AttemptStatus
_EXPORTER = InMemorySpanExporter()
add_processor(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def by_buyer(reply: pb.RouteLeadResponse) -> dict[str, pb.Attempt]:
    return {a.buyer_id: a for a in reply.attempts}


def with_fields(doc: dict[str, Any], **fields: dict[str, Any]) -> dict[str, Any]:
    doc["lead"]["fields"] = {**LEAD_FIELDS, **fields}
    return doc


async def test_our_cost_and_internal_fields_leave_only_where_mapped_by_name(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("a", ping=bid(30), post=accept("A-1"))
    buyers.on("b", ping=bid(40), post=accept("B-1"))
    explicit = {
        "ping": {"fields": {"st": "state", "q": "lead_score"}},
        "post": {"fields": {"email": "email", "our_cost": "source_price", "score": "lead_score"}},
    }
    doc = with_fields(
        document([buyer(buyers.url, "a"), buyer(buyers.url, "b", **explicit)], max_buyers=2),
        source_price={"type": "decimal"},
        lead_score={"type": "int", "internal": True},
    )
    doc["sources"][0]["price_field"] = "source_price"
    h = await start(config=compile_doc(doc))

    reply = await h.route({**GOOD_LEAD, "source_price": "7.50", "lead_score": "88"})

    assert reply.outcome == pb.SOLD and sorted(s.buyer_id for s in reply.sales) == ["a", "b"]
    assert reply.cost == "7.50"  # the source's price is still what we pay
    for step in ("ping", "post"):
        sent = buyers.got("a", step)[0].json()
        assert not {"source_price", "lead_score"} & sent.keys(), f"default {step} leaked {sent}"
        assert "7.50" not in sent.values() and 88 not in sent.values()
    assert buyers.got("a", "post")[0].json()["email"] == GOOD_LEAD["email"]  # the rest still goes
    assert buyers.got("b", "ping")[0].json() == {"st": "CA", "q": 88}
    assert buyers.got("b", "post")[0].json() == {"email": GOOD_LEAD["email"], "our_cost": "7.50", "score": 88}


def _yaml_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config_bytes(text.encode(), "test.yaml", {})
    return err.value.problems


def _with_ping(extra: str) -> str:
    """The base document as YAML text, with more of buyer a's ping written by hand."""
    doc = document([buyer(lambda b, s: f"http://127.0.0.1:1/{b}/{s}", "a")])
    text = yaml.safe_dump(doc, sort_keys=False)
    marker = "    timeout_ms: 400\n"
    assert text.count(marker) == 1
    return text.replace(marker, marker + extra)


def test_yes_where_text_is_meant_is_refused_with_the_path_and_the_fix() -> None:
    found = _yaml_problems(_with_ping("    answer:\n      bid: {path: decision, values: [yes, bid]}\n"))

    assert found == [
        "buyers[0].ping.answer.bid.values[0]: YAML reads yes as the boolean true; for the text, "
        "quote it: 'yes'; for a boolean, write true"
    ]


def test_yaml_booleans_in_text_only_places_and_keys_are_refused() -> None:
    text = _with_ping("    fields:\n      own: {field: credit_range, map: {yes: Y}}\n").replace(
        "      enum:\n      - 600-650\n", "      enum:\n      - No\n      - 'off'\n      - 600-650\n"
    )

    found = _yaml_problems(text)

    assert "lead.fields.credit_range.enum[0]: YAML reads No as a boolean, not text; quote it: 'No'" in found
    assert "buyers[0].ping.fields.own.map.yes: YAML reads yes as a boolean, not text; quote it: 'yes'" in (
        found
    )
    assert len(found) == 2  # the quoted 'off' is text, and each mistake is reported once


async def test_quoted_words_and_real_booleans_keep_their_meaning(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=respond({"decision": "yes", "price": 30}), post=accept())
    buyers.on("b", ping=respond({"decision": True, "price": 20}), post=accept())
    buyers.on("c", ping=respond({"decision": "no", "price": 99}))
    answer = "    answer:\n      bid: {path: decision, values: ['yes', true, 'on']}\n"
    doc = document([buyer(buyers.url, x) for x in "abc"], max_buyers=3)
    text = yaml.safe_dump(doc, sort_keys=False)
    text = text.replace("    timeout_ms: 400\n", "    timeout_ms: 400\n" + answer)
    # A boolean place: any YAML spelling of a boolean is that boolean.
    text = text.replace("pii: true", "pii: yes")
    config = load_config_bytes(text.encode(), "test.yaml", {})
    assert config.schema.fields["email"].pii is True
    h = await start(config=config)

    reply = await h.route()

    assert sorted(s.buyer_id for s in reply.sales) == ["a", "b"]  # "yes" and true both bid
    assert by_buyer(reply)["c"].status == S.NO_BID
    assert b"maria" not in buyers.got("a", "ping")[0].body.lower()  # pii: yes still keeps PII out


async def test_each_post_attempt_carries_its_own_post_id_recorded_in_the_trace(
    buyers: BuyerServer, start: Start, spans: InMemorySpanExporter
) -> None:
    buyers.on("a", ping=bid(50), post=reject("duplicate"))
    buyers.on("b", ping=bid(40), post=accept("B-1"))
    mapped = {"fields": {"ref": {"from": "post_id"}, "pid": {"from": "ping_id"}, "amount": {"from": "price"}}}
    h = await start([buyer(buyers.url, "a", post=mapped), buyer(buyers.url, "b")])

    reply = await h.route()

    assert reply.outcome == pb.SOLD and reply.sales[0].buyer_id == "b"
    to_a = buyers.got("a", "post")[0].json()
    assert (to_a["pid"], to_a["amount"]) == ("ping-50", "50.00")
    to_b = buyers.got("b", "post")[0].json()  # the default post carries it too, as seed 000's does
    ids = [to_a["ref"], to_b["post_id"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and ids[0] != ids[1]
    posts = {s.attributes["buyer.id"]: s.attributes["post.id"] for s in spans.get_finished_spans() if
             s.name == "post" and s.attributes is not None}  # fmt: skip
    assert posts == {"a": ids[0], "b": ids[1]}


def test_post_id_exists_only_for_the_post() -> None:
    doc = document(
        [buyer(lambda b, s: f"http://127.0.0.1:1/{b}/{s}", "a", ping={"fields": {"r": {"from": "post_id"}}})]
    )

    with pytest.raises(ConfigError) as err:
        compile_doc(doc)

    assert err.value.problems == ["buyers[0].ping.fields.r: `from: post_id` exists only for the post"]


def _aged_lead(minutes: float) -> dict[str, str]:
    stamp = datetime.now(UTC) - timedelta(minutes=minutes)
    return {**GOOD_LEAD, "created_at": stamp.isoformat()}


async def test_a_bid_is_held_to_max_age_minutes_and_to_conditions_nobody_understands(
    buyers: BuyerServer, start: Start
) -> None:
    buyers.on("fresh", ping=bid(50, conditions={"max_age_minutes": 5}), post=accept())
    buyers.on("patient", ping=bid(45, conditions={"max_age_minutes": 15}), post=accept())
    buyers.on("picky", ping=bid(60, conditions={"min_credit_score": 700}), post=accept())
    doc = with_fields(
        document([buyer(buyers.url, x) for x in ("fresh", "patient", "picky")]),
        created_at={"type": "datetime"},
    )
    doc["lead"]["created_at_field"] = "created_at"
    h = await start(config=compile_doc(doc))

    old = await h.route(_aged_lead(10))
    new = await h.route(_aged_lead(1))

    assert [s.buyer_id for s in old.sales] == ["patient"]  # the 10-minute-old lead is not `fresh`'s
    attempts = by_buyer(old)
    assert attempts["fresh"].status == S.CONDITION_FAILED
    assert attempts["fresh"].reason == "bid requires a lead at most 5 minutes old (max_age_minutes)"
    assert attempts["picky"].status == S.CONDITION_FAILED  # never sold under terms nobody checked
    assert attempts["picky"].reason == "bid condition min_credit_score not understood: not sold under it"
    assert [s.buyer_id for s in new.sales] == ["fresh"]
    assert by_buyer(new)["picky"].status == S.CONDITION_FAILED
    assert [r.buyer for r in buyers.got(step="post")] == ["patient", "fresh"]


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize("digits", [ARABIC_INDIC, FULLWIDTH], ids=["arabic-indic", "fullwidth"])
async def test_only_ascii_digits_pass_validation(
    digits: dict[int, str], buyers: BuyerServer, start: Start
) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    doc = with_fields(
        document([buyer(buyers.url, "a")]),
        units={"type": "int"},
        income={"type": "decimal"},
        account={"type": "string", "pattern": r"\d{6}"},
        moved_in={"type": "date"},
    )
    h = await start(config=compile_doc(doc))
    ascii_lead = {
        **GOOD_LEAD,
        "units": "12",
        "income": "4500.50",
        "account": "123456",
        "moved_in": "2020-01-31",
    }
    assert (await h.route(ascii_lead)).outcome == pb.SOLD
    buyers.received.clear()

    for name in ("zip", "units", "income", "account", "moved_in"):
        lead = {**ascii_lead, name: ascii_lead[name].translate(digits)}
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await h.route(lead)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert f"fields.{name}:" in (err.value.details() or ""), err.value.details()
    assert buyers.received == []  # nothing written in foreign digits was offered to anyone


def test_digits_are_ascii_wherever_a_value_is_read_as_a_number() -> None:
    assert TRANSFORMS["digits"]("(٥٥٥) 201-3344") == "2013344"
    assert identity.e164("５５５２０１３３４４") == ""
    at_least_700 = compile_rule({"field": "score", "gte": 700}, "filter", {"score": {}})
    assert at_least_700.failure(Facts({"score": "750"})) is None
    assert at_least_700.failure(Facts({"score": "٧٥٠"})) == "score must be >= 700"


def test_admin_upsert_refuses_a_yaml_boolean_meant_as_text_before_sending(tmp_path: Path) -> None:
    # The CLI sends JSON: once parsed, `yes` would be indistinguishable from true.
    file = tmp_path / "buyer.yaml"
    file.write_text(
        "id: a\nping: {url: 'http://127.0.0.1:1/a/ping', timeout_ms: 400,\n"
        "       answer: {bid: {path: decision, values: [yes]}}}\n"
        "post: {url: 'http://127.0.0.1:1/a/post', timeout_ms: 300}\n"
    )
    cmd = [sys.executable, "-m", "routelead.cli", "admin", "--target", "127.0.0.1:1", "upsert", "buyer",
           str(file), "--reason", "test"]  # fmt: skip
    env = {**os.environ, "ROUTELEAD_ADMIN_TOKEN": "t" * 32}

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)

    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"routelead: {file}: ping.answer.bid.values[0]: YAML reads yes as the boolean true; "
        "for the text, quote it: 'yes'; for a boolean, write true\n"
    )


def test_admin_upsert_settles_a_lead_type_file_as_it_does_a_buyer(tmp_path: Path) -> None:
    # Every kind `admin upsert` takes is checked before sending, lead types as well.
    file = tmp_path / "auto.yaml"
    file.write_text("id: auto\nfields: {state: {enum: [no, CA]}}\n")  # Norway's code, read as false
    cmd = [sys.executable, "-m", "routelead.cli", "admin", "--target", "127.0.0.1:1", "upsert", "lead_type",
           str(file), "--reason", "test"]  # fmt: skip
    env = {**os.environ, "ROUTELEAD_ADMIN_TOKEN": "t" * 32}

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)

    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"routelead: {file}: fields.state.enum[0]: YAML reads no as a boolean, not text; quote it: 'no'\n"
    )


def test_the_client_cli_refuses_a_yaml_boolean_meant_as_text_too() -> None:
    text = (
        "id: a\nfixed_price: '10.00'\n"
        "post: {url: 'http://x/p', timeout_ms: 300, answer: {accepted: {path: ok, values: [on]}}}\n"
    )

    with pytest.raises(LocalError) as err:
        parse_buyer_file(text)

    assert str(err.value) == (
        "post.answer.accepted.values[0]: YAML reads on as the boolean true; "
        "for the text, quote it: 'on'; for a boolean, write true"
    )
    fixed = parse_buyer_file(text.replace("[on]", "['on', true]"))
    assert fixed["post"]["answer"]["accepted"]["values"] == ["on", True]
