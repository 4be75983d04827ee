"""The running service: health checking, reflection, JSON logs without PII, draining on SIGTERM."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import orjson
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from routelead.api.server import Service
from routelead.telemetry.logs import configure_logging
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer, accept, bid, slow
from tests.configs import GOOD_LEAD, PII_VALUES, buyer, compile_doc, document
from tests.conftest import Start


async def test_health_checking_reports_serving(buyers: BuyerServer, start: Start) -> None:
    h = await start([buyer(buyers.url, "a")])
    stub = health_pb2_grpc.HealthStub(h.channel)

    for name in ("", "routelead.v1.RouteLead"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(buyers: BuyerServer, start: Start) -> None:
    h = await start([buyer(buyers.url, "a")])
    stub = reflection_pb2_grpc.ServerReflectionStub(h.channel)

    async def ask() -> reflection_pb2.ServerReflectionResponse:
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        async for reply in call:
            return reply
        raise AssertionError("no reflection answer")

    names = {s.name for s in (await ask()).list_services_response.service}
    assert {"routelead.v1.RouteLead", "grpc.health.v1.Health"} <= names


async def test_the_decision_log_is_json_and_free_of_pii(buyers: BuyerServer, start: Start) -> None:
    buyers.on("a", ping=bid(30), post=accept())
    out = io.StringIO()
    configure_logging("INFO", out, cache=False)
    try:
        h = await start([buyer(buyers.url, "a")])
        reply = await h.route()
    finally:
        configure_logging("INFO", cache=False)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    decision = next(x for x in lines if x["event"] == "lead.routed")
    assert decision["lead_id"] == reply.lead_id and decision["outcome"] == "SOLD"
    assert decision["attempts"] == [{"buyer": "a", "status": "POST_ACCEPTED", "price": "30.00"}]
    for value in PII_VALUES:
        assert value not in out.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigterm_drains_in_flight_leads_then_exits(buyers: BuyerServer, tmp_path: Path) -> None:
    buyers.on("a", ping=slow(0.4, bid(30)), post=accept("A-1"))
    config = tmp_path / "flows.yaml"
    config.write_text(yaml.safe_dump(document([buyer(buyers.url, "a", ping={"timeout_ms": 600})])))
    port = _free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 (starting a process does not block; waits go to a thread)
        [
            sys.executable,
            "-m",
            "routelead.cli",
            "serve",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "ROUTELEAD_LOG_LEVEL": "INFO"},
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=20)
            stub = pb_grpc.RouteLeadStub(channel)
            request = pb.RouteLeadRequest(flow="solar", source_id="src-1", fields=GOOD_LEAD)
            in_flight = asyncio.ensure_future(stub.RouteLead(request, timeout=10))
            await asyncio.sleep(0.15)  # the lead is now waiting on the buyer's ping
            proc.send_signal(signal.SIGTERM)
            reply = await in_flight
        assert reply.outcome == pb.SOLD and reply.sales[0].buyer_lead_id == "A-1"
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate()
    events = [orjson.loads(line)["event"] for line in stdout.splitlines() if line.startswith(b"{")]
    assert events.index("server.draining") < events.index("server.stopped"), stderr.decode()
    assert len(buyers.got("a", "post")) == 1


def test_log_lines_from_concurrent_processes_stay_whole(tmp_path: Path) -> None:
    """`serve --workers` processes share stdout: each JSON line must reach it in one write."""
    script = (
        "import sys\n"
        "from routelead.telemetry.logs import configure_logging\n"
        "import structlog\n"
        "configure_logging('INFO')\n"
        "log = structlog.get_logger('t')\n"
        "for i in range(3000):\n"
        "    log.info('lead.routed', worker=sys.argv[1], n=i, pad='x' * 200)\n"
    )
    out = tmp_path / "shared.log"
    with out.open("ab") as sink:
        procs = [subprocess.Popen([sys.executable, "-c", script, str(w)], stdout=sink) for w in range(4)]
        for p in procs:
            assert p.wait(120) == 0
    lines = out.read_bytes().splitlines()
    assert len(lines) == 4 * 3000
    assert all(orjson.loads(line)["event"] == "lead.routed" for line in lines)


async def test_past_max_in_flight_a_call_is_refused_at_once_and_nothing_is_routed(
    buyers: BuyerServer,
) -> None:
    buyers.on("a", ping=slow(0.25, bid(30)), post=accept("A-1"))
    service = Service(compile_doc(document([buyer(buyers.url, "a")])), max_in_flight=1)
    await service.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        stub = pb_grpc.RouteLeadStub(channel)

        def lead(lead_id: str) -> pb.RouteLeadRequest:
            return pb.RouteLeadRequest(lead_id=lead_id, flow="solar", source_id="src-1", fields=GOOD_LEAD)

        first = asyncio.ensure_future(stub.RouteLead(lead("first"), timeout=5))
        async with asyncio.timeout(5):
            while not buyers.got("a", "ping"):  # noqa: ASYNC110 (the buyer server keeps a list)
                await asyncio.sleep(0.01)  # the first lead is now in flight
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RouteLead(lead("second"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not (await first).replayed and (await first).outcome == pb.SOLD
        # The refused lead was never routed: only the first was pinged, and it can be sent again.
        assert len(buyers.got("a", "ping")) == 1
        again = await stub.RouteLead(lead("second"), timeout=5)
        assert again.outcome == pb.SOLD and not again.replayed
    finally:
        await channel.close()
        await service.stop(grace=0.5)
