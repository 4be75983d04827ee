"""Buyer formats, data-driven in the style of Prebid Server's adapter tests.

Each file in tests/fixtures/buyers/ holds a lead, one buyer's config, and a list of calls
(ping, then post): the request we must send, the buyer's canned answer, and the outcome we
must read from it. Adding a file adds a test; a new buyer format needs no new test function.
The buyer config goes through the real loader; requests and parsing use the compiled adapters.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
import yaml
from routelead.buyers.base import BadAnswer, HttpAnswer, HttpRequest, PingAnswer, PostAnswer
from routelead.config.loader import load_config_bytes
from routelead.domain.mapping import Transaction
from routelead.domain.money import fmt

from tests.configs import LEAD_FIELDS, document

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "buyers").glob("*.yaml"))
BUYER_URL = "http://buyer.test"
LEAD_ID = "L-0001"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def test_there_are_enough_fixtures_to_cover_every_format() -> None:
    docs = [yaml.safe_load(f.read_text()) for f in FIXTURES]
    assert len(docs) >= 20
    steps = [(c["step"], d["buyer"].get(c["step"], {})) for d in docs for c in d["calls"]]
    assert {ep.get("format", "json") for _, ep in steps} == {"json", "form", "xml", "query"}
    assert {ep.get("answer", {}).get("format", "json") for _, ep in steps} == {"json", "xml", "text", "html"}
    errors = {ep.get("answer", {}).get("format", "json") for d in docs for c in d["calls"]
              for ep in [d["buyer"].get(c["step"], {})] if "error" in c["expected"]}  # fmt: skip
    assert errors == {"json", "xml", "text", "html"}, "a malformed answer of every kind"


@pytest.mark.parametrize("path", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_buyer_fixture(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    env = spec.get("env", {})
    buyer = _compile(spec, env)
    lead = buyer_schema(spec).validate(spec["lead"])
    ping: PingAnswer | None = None
    for n, call in enumerate(spec["calls"]):
        where = f"{path.name} calls[{n}] ({call['step']})"
        if call["step"] == "ping":
            assert buyer.ping is not None and buyer.ping_parser is not None, where
            request = buyer.ping.request(lead.ping_fields, Transaction(LEAD_ID))
            _check_request(request, call["request"], env, where)
            outcome = _outcome(buyer.ping_parser.parse, call["answer"], "bad answer")
            if isinstance(outcome, PingAnswer):
                ping = outcome
                assert _ping_view(outcome) == _expected_ping(call["expected"]), where
        else:
            tx = Transaction(
                LEAD_ID,
                ping.ping_id if ping else "",
                fmt(ping.price) if ping and ping.price else "",
                ping.carried if ping else {},
            )
            request = buyer.post.request(lead.fields, tx)
            _check_request(request, call["request"], env, where)
            outcome = _outcome(buyer.post_parser.parse, call["answer"], "bad post answer")
            if isinstance(outcome, PostAnswer):
                assert _post_view(outcome) == _expected_post(call["expected"]), where
        if isinstance(outcome, str):
            assert "error" in call["expected"], f"{where}: unexpected {outcome}"
            assert call["expected"]["error"] in outcome, where
            # Excerpts of broken answers must not leak what the buyer echoed of the lead.
            for name, spec_field in _schema_fields(spec).items():
                value = lead.fields.get(name)
                if spec_field.get("pii") and value:
                    assert value not in outcome, f"{where}: PII field {name} in {outcome!r}"
        else:
            assert "error" not in call["expected"], f"{where}: expected an error, got {outcome}"


def _schema_fields(spec: dict[str, Any]) -> dict[str, Any]:
    return {**LEAD_FIELDS, **spec.get("fields", {})}


def buyer_schema(spec: dict[str, Any]) -> Any:
    return _compile(spec, spec.get("env", {}), schema_only=True)


def _compile(spec: dict[str, Any], env: dict[str, str], schema_only: bool = False) -> Any:
    buyer = {"id": "b", **spec["buyer"]}
    for step in ("ping", "post"):
        if step in buyer:
            buyer[step] = {"timeout_ms": 500, **buyer[step]}
            buyer[step]["url"] = BUYER_URL + buyer[step].get("url", f"/{step}")
    doc = document([buyer])
    doc["lead"]["fields"] = _schema_fields(spec)
    # Key order is part of a form, query or XML request: keep the fixture's order.
    config = load_config_bytes(yaml.safe_dump(doc, sort_keys=False).encode(), "fixture", env)
    return config.schema if schema_only else config.buyers["b"]


def _check_request(got: HttpRequest, want: dict[str, Any], env: dict[str, str], where: str) -> None:
    assert got.method == want.get("method", "POST"), where
    assert got.url == BUYER_URL + want.get("url", urlsplit(got.url).path), where
    headers = dict(got.headers)
    for name, value in want.get("headers", {}).items():
        assert headers.get(name) == _VAR.sub(lambda m: env[m.group(1)], value), f"{where}: header {name}"
    if "json" in want:
        assert got.body is not None and orjson.loads(got.body) == want["json"], where
    elif "form" in want:
        assert got.body is not None and parse_qsl(got.body.decode(), strict_parsing=True) == [
            (k, str(v)) for k, v in want["form"].items()
        ], where
    elif "body" in want:
        assert (got.body or b"").decode() == want["body"].strip(), where
    else:
        assert got.body is None, f"{where}: a body where none belongs"


def _outcome(parse: Any, answer: dict[str, Any], prefix: str) -> PingAnswer | PostAnswer | str:
    http = HttpAnswer(
        answer.get("status", 200), str(answer.get("body", "")).encode(), answer.get("content_type", "")
    )
    try:
        out: PingAnswer | PostAnswer = parse(http)
    except BadAnswer as exc:
        return f"{prefix}: {exc}"  # as the router words it
    return out


def _ping_view(a: PingAnswer) -> dict[str, Any]:
    return {
        "bid": a.bid,
        "price": None if a.price is None else str(a.price),
        "ping_id": a.ping_id,
        "carried": a.carried,
        "exclusive": a.exclusive,
        "reason": a.reason,
        "conditions": a.conditions,
    }


def _expected_ping(e: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "price": None,
        "ping_id": "",
        "carried": {},
        "exclusive": False,
        "reason": "",
        "conditions": {},
    }
    out = {**base, **e}
    if out["price"] is not None:
        out["price"] = str(Decimal(str(out["price"])))
    return out


def _post_view(a: PostAnswer) -> dict[str, Any]:
    return {
        "accepted": a.accepted,
        "buyer_lead_id": a.buyer_lead_id,
        "reason": a.reason,
        "price": None if a.price is None else str(a.price),
    }


def _expected_post(e: dict[str, Any]) -> dict[str, Any]:
    return {"buyer_lead_id": "", "reason": "", "price": None, **e}
