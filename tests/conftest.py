"""Session-wide fixtures: real buyer servers on loopback and the real service over gRPC."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from routelead.api.server import Service
from routelead.config.runtime import RuntimeConfig
from routelead.telemetry.logs import configure_logging
from routelead.telemetry.tracing import configure_tracing
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from tests.buyers import BuyerServer
from tests.configs import GOOD_LEAD, compile_doc, document

configure_tracing()
configure_logging("INFO", cache=False)  # tests re-route log output to capture it
# Processes the tests start keep their embedded ledger out of the work tree.
os.environ.setdefault(
    "ROUTELEAD_DB", os.path.join(tempfile.mkdtemp(prefix="routelead-tests-"), "routelead.db")
)


@pytest.fixture
async def buyers() -> AsyncIterator[BuyerServer]:
    server = BuyerServer()
    await server.start()
    yield server
    await server.stop()


class Harness:
    """A running service plus a client stub; `route` sends one lead."""

    def __init__(self, service: Service, channel: grpc.aio.Channel) -> None:
        self.service = service
        self.channel = channel
        self.stub = pb_grpc.RouteLeadStub(channel)

    async def route(
        self,
        fields: dict[str, str] | None = None,
        *,
        deadline_s: float = 10,
        **kw: Any,
    ) -> pb.RouteLeadResponse:
        request = pb.RouteLeadRequest(
            flow=kw.pop("flow", "solar"),
            source_id=kw.pop("source_id", "src-1"),
            fields=GOOD_LEAD if fields is None else fields,
            **kw,
        )
        reply: pb.RouteLeadResponse = await self.stub.RouteLead(request, timeout=deadline_s)
        return reply


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """start(buyers=[...], tiers=..., **flow) or start(config=RuntimeConfig) → Harness."""
    running: list[tuple[Service, grpc.aio.Channel]] = []

    async def go(
        buyers: list[dict[str, Any]] | None = None,
        tiers: list[list[str]] | None = None,
        config: RuntimeConfig | None = None,
        **flow: Any,
    ) -> Harness:
        if config is None:
            assert buyers is not None
            config = compile_doc(document(buyers, tiers, **flow))
        service = Service(config)
        await service.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        running.append((service, channel))
        return Harness(service, channel)

    yield go
    for service, channel in running:
        await channel.close()
        await service.stop(grace=0.5)
