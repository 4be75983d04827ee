"""Buyer secrets from the environment never reach logs, spans, error details or Admin answers."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from routelead.api.admin import AdminServicer
from routelead.api.server import Service
from routelead.records.configstore import ConfigStore, compile_version
from routelead.telemetry.logs import configure_logging
from routelead.v1 import admin_pb2 as apb
from routelead.v1 import admin_pb2_grpc as apb_grpc
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, raw, respond
from tests.configs import GOOD_LEAD, buyer, document
from tests.records.conftest import Backend

TOKEN = "admin-token-for-secret-scan-000001"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SECRETS = {
    "GOOD_KEY": "sk-good-5f1c9e7a2b",
    "DOWN_KEY": "sk-down-81d3aa04ce",
    "POST_FAILS_KEY": "sk-postfail-c4e2b917",
    "BEARER": "bearer-secret-77b0d1e5",
}


def _doc(buyers: BuyerServer) -> str:
    def keyed(name: str, var: str, **extra: object) -> dict[str, object]:
        headers = {"X-Api-Key": f"${{{var}}}", "Authorization": "Bearer ${BEARER}"}
        return buyer(buyers.url, name, ping={"headers": headers}, post={"headers": headers}, **extra)

    fleet = [keyed("good", "GOOD_KEY"), keyed("down", "DOWN_KEY"), keyed("postfail", "POST_FAILS_KEY")]
    return yaml.safe_dump(document(fleet, dedupe=None))


async def test_secrets_never_in_logs_spans_errors_or_admin_answers(
    backend: Backend, buyers: BuyerServer, tmp_path: Path
) -> None:
    buyers.on("good", ping=bid("20.00"), post=accept("G-1"))
    buyers.on("down", ping=raw(b"<html>500</html>", status=500))  # every ping fails
    buyers.on("postfail", ping=bid("60.00"), post=respond({"error": "boom"}, status=500))
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    out = io.StringIO()
    configure_logging("DEBUG", out, cache=False)
    answers: list[str] = []
    errors: list[str] = []
    service: Service | None = None
    try:
        ledger = await backend.ledger()
        store = ConfigStore(ledger.engine)
        live = await store.seed(_doc(buyers), SECRETS)
        admin = AdminServicer(store, TOKEN, SECRETS)
        service = Service(compile_version(live, SECRETS), ledger=ledger, extra_services=[admin.register])
        await service.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            routing, adm = pb_grpc.RouteLeadStub(channel), apb_grpc.AdminStub(channel)
            replies = []
            for i in range(4):
                fields = {**GOOD_LEAD, "email": f"s{i}@example.com"}
                request = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=fields)
                replies.append(await routing.RouteLead(request, timeout=10))
            for bad in (pb.RouteLeadRequest(flow="solar", source_id="src-1", fields={"email": "x"}),
                        pb.RouteLeadRequest(flow="nope", source_id="src-1", fields=GOOD_LEAD)):  # fmt: skip
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await routing.RouteLead(bad, timeout=10)
                errors.append(err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await adm.ListVersions(apb.ListVersionsRequest(), metadata=(("authorization", "Bearer x"),))
            errors.append(denied.value.details() or "")
            answers.append(str(await adm.ListVersions(apb.ListVersionsRequest(), metadata=AUTH)))
            answers.append(str(await adm.ExportVersion(apb.ExportVersionRequest(), metadata=AUTH)))
            for kind in (apb.BUYER, apb.SOURCE, apb.FLOW):
                answers.append(str(await adm.ListEntities(apb.ListEntitiesRequest(kind=kind), metadata=AUTH)))
            for name in ("good", "down", "postfail"):
                got = await adm.GetEntity(apb.GetEntityRequest(kind=apb.BUYER, id=name), metadata=AUTH)
                answers.append(str(got))
            answers += [str(r) for r in replies]
    finally:
        if service is not None:
            await service.stop(grace=0.5)
        configure_logging("INFO", cache=False)
        exporter.shutdown()

    # The error paths really ran, and the buyers really got the keys.
    statuses = {a.buyer_id: pb.AttemptStatus.Name(a.status) for r in replies for a in r.attempts}
    assert statuses["down"] == "ERROR" and statuses["postfail"] == "POST_ERROR", statuses
    assert [s.buyer_id for s in replies[0].sales] == ["good"]
    assert buyers.got("good", "post")[0].headers["X-Api-Key"] == SECRETS["GOOD_KEY"]
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} >= {"RouteLead", "ping", "post"}
    assert '"event":"lead.routed"' in out.getvalue()
    seen = [out.getvalue(), *errors, *answers]
    seen += [s.name + str(dict(s.attributes or {})) + str([e.attributes for e in s.events]) for s in spans]
    seen += [str(s.status.description) for s in spans]
    blob = "\n".join(seen)
    for name, value in SECRETS.items():
        assert value not in blob, f"secret {name} leaked"
    assert "${GOOD_KEY}" in blob  # the Admin API shows the reference, not the value
