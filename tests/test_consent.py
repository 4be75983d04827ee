"""Consent evidence (TrustedForm / Jornaya certificates) on real servers: checked for presence,
format and age as buyer requirements and filter rules; sent in the post, never in a ping, logs or
traces."""

from __future__ import annotations

import copy
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from routelead.api.server import Service
from routelead.config.loader import ConfigError
from routelead.domain.rules import Facts
from routelead.telemetry.logs import configure_logging
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid
from tests.configs import GOOD_LEAD, LEAD_FIELDS, buyer, compile_doc, document

CERT = "https://cert.trustedform.com/0123456789abcdef0123456789abcdef01234567"
LEADID = "A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF"
FIELDS = {
    **LEAD_FIELDS,
    "trustedform_cert": {"type": "consent_certificate"},
    "submitted_at": {"type": "datetime"},
}


def config(buyers: list[dict[str, Any]]) -> dict[str, Any]:
    doc = document(buyers)
    doc["lead"] = {"fields": copy.deepcopy(FIELDS), "created_at_field": "submitted_at"}
    return doc


def lead(minutes_ago: float, cert: str | None = CERT) -> dict[str, str]:
    at = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
    return {**GOOD_LEAD, "submitted_at": at, **({"trustedform_cert": cert} if cert else {})}


async def route(service: Service, fields: dict[str, str]) -> pb.RouteLeadResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        request = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=fields)
        reply: pb.RouteLeadResponse = await pb_grpc.RouteLeadStub(channel).RouteLead(request, timeout=10)
        return reply


async def test_a_buyer_requiring_fresh_consent_evidence_gets_only_such_leads(buyers: BuyerServer) -> None:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    out = io.StringIO()
    configure_logging("DEBUG", out, cache=False)
    buyers.on("strict", ping=bid("50.00"), post=accept("S-1"))
    buyers.on("open", ping=bid("20.00"), post=accept("O-1"))
    strict = buyer(buyers.url, "strict", requires={"certificate": True, "max_age_minutes": 10})
    try:
        async with Service(compile_doc(config([strict, buyer(buyers.url, "open")]))) as service:
            fresh = await route(service, lead(2))
            pinged = len(buyers.got("strict", "ping"))
            stale = await route(service, {**lead(30), "email": "stale@example.com"})
            missing = await route(service, {**lead(1, cert=None), "email": "none@example.com"})
            jornaya = await route(service, {**lead(1, cert=LEADID.lower()), "email": "j@example.com"})
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await route(service, lead(1, cert="https://cert.trustedform.com/not-a-cert"))
    finally:
        configure_logging("INFO", cache=False)
        exporter.shutdown()
    assert fresh.sales[0].buyer_id == "strict" and pinged == 1
    skipped = {a.buyer_id: a for a in stale.attempts}["strict"]
    assert skipped.status == pb.SKIPPED_FILTER
    assert skipped.reason == "filter: consent certificate older than 10 minutes"
    assert {a.buyer_id: a for a in missing.attempts}["strict"].reason == (
        "filter: no consent certificate (trustedform_cert)"
    )
    assert jornaya.sales[0].buyer_id == "strict"
    assert len(buyers.got("strict", "ping")) == 2  # the stale and uncertified leads were never pinged
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fields.trustedform_cert: must be a TrustedForm certificate URL or a Jornaya LeadiD token" in (
        bad.value.details() or ""
    )
    # The certificate goes in the post, never in a ping.
    assert all(CERT.encode() not in r.body and LEADID.encode() not in r.body for r in buyers.got(step="ping"))
    assert CERT.encode() in buyers.got("strict", "post")[0].body
    assert LEADID.encode() in buyers.got("strict", "post")[1].body
    blob = "\n".join(
        [
            out.getvalue(),
            bad.value.details() or "",
            *(str(r) for r in (fresh, stale, missing, jornaya)),
            *(str(dict(s.attributes or {})) for s in exporter.get_finished_spans()),
        ]
    )
    for secret in (CERT, "0123456789abcdef0123", LEADID, "not-a-cert"):
        assert secret not in blob, f"certificate {secret!r} leaked"


def test_check_config_refuses_certificates_where_they_cannot_work() -> None:
    url = lambda b, s: f"http://127.0.0.1:1/{b}/{s}"  # noqa: E731
    # A buyer requiring a certificate of a lead type that has none.
    with pytest.raises(ConfigError, match=r"buyers\[0\]\.requires\.certificate: the lead type has no field"):
        compile_doc(document([buyer(url, "b", requires={"certificate": True})]))
    # A certificate is PII: it can neither be declared otherwise nor mapped into a ping.
    doc = config([buyer(url, "b")])
    doc["lead"]["fields"]["trustedform_cert"]["pii"] = False
    with pytest.raises(ConfigError, match="a consent_certificate is PII"):
        compile_doc(doc)
    doc = config([buyer(url, "b", ping={"fields": {"cert": {"field": "trustedform_cert"}}})])
    with pytest.raises(ConfigError, match="'trustedform_cert' is PII and may not be sent in a ping"):
        compile_doc(doc)
    # The rule form, for filters: on a field that is not a certificate, named.
    doc = config([buyer(url, "b", filter={"certificate": "email", "max_age_minutes": 5})])
    with pytest.raises(ConfigError, match="'email' is not a field of type consent_certificate"):
        compile_doc(doc)
    ok = config([buyer(url, "b", filter={"certificate": "trustedform_cert", "max_age_minutes": 5})])
    rule = compile_doc(ok).buyers["b"].filter
    assert rule.failure(Facts({})) == "no consent certificate (trustedform_cert)"
    assert rule.failure(Facts({"trustedform_cert": CERT}, lead_age_s=301)) == (
        "consent certificate older than 5 minutes"
    )
    assert rule.failure(Facts({"trustedform_cert": CERT}, lead_age_s=299)) is None
