"""Start the gRPC server with health checking and reflection; drain in-flight leads on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Self

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from routelead.api.servicer import RouteLeadServicer
from routelead.config.runtime import RuntimeConfig
from routelead.records.port import LedgerWriter
from routelead.router import Router
from routelead.state.memory import MemoryCapStore, MemoryDedupeStore, MemoryIdempotencyStore
from routelead.state.ports import CapStore, DedupeStore, IdempotencyStore
from routelead.transport import Transport
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

log = structlog.get_logger("routelead.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RouteLead"].full_name


class Service:
    """The whole running service: transport, stores, router and gRPC server."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        address: str = "127.0.0.1:0",
        caps: CapStore | None = None,
        dedupe: DedupeStore | None = None,
        idempotency: IdempotencyStore | None = None,
        ledger: LedgerWriter | None = None,
        extra_services: Sequence[Callable[[grpc.aio.Server], str]] = (),
    ) -> None:
        self.config = config
        self.address = address
        self.caps = caps if caps is not None else MemoryCapStore()
        self.dedupe = dedupe if dedupe is not None else MemoryDedupeStore()
        self.idempotency = idempotency if idempotency is not None else MemoryIdempotencyStore()
        self.ledger = ledger
        # Each adds a servicer (e.g. Admin) to the server and returns its full service name.
        self.extra_services = extra_services
        self.router: Router | None = None
        self.transport = Transport(verify_tls=config.verify_buyer_tls)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()

    def use_config(self, config: RuntimeConfig) -> None:
        """A new configuration version goes live: leads already in flight finish on the old one."""
        self.config = config
        if self.router is not None:
            self.router.config = config

    @property
    def drain_s(self) -> float:
        """Long enough for any in-flight lead to finish: the longest deadline plus a margin."""
        return max(f.deadline_s for f in self.config.flows.values()) + 1.0

    async def start(self) -> int:
        await self.transport.start()
        router = self.router = Router(
            self.config, self.transport, self.caps, self.dedupe, self.idempotency, ledger=self.ledger
        )
        size = self.config.max_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", 4 * size),
                # One process owns its port unless `serve --workers` asks otherwise.
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ]
        )
        pb_grpc.add_RouteLeadServicer_to_server(RouteLeadServicer(router), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        extra = [register(server) for register in self.extra_services]
        reflection.enable_server_reflection(
            (
                *extra,
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        self.port = server.add_insecure_port(self.address)
        if self.port == 0:
            await self.transport.close()
            raise OSError(f"cannot listen on {self.address}")
        await server.start()
        self._server = server
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        log.info("server.started", address=self.address, port=self.port, config_version=self.config.version)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new leads, let in-flight ones finish (bounded by `grace`), then close."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.drain_s if grace is None else grace)
        self._server = None
        await self.transport.close()
        log.info("server.stopped", port=self.port)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve_until_signalled(service: Service) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    await stop.wait()
    log.info("server.draining", grace_s=service.drain_s)
    await service.stop()
