"""Start the gRPC server with health checking and reflection; drain in-flight leads on stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from routelead.api.security import Security
from routelead.api.servicer import RouteLeadServicer
from routelead.api.traced_caps import TracedCapStore
from routelead.config.runtime import RuntimeConfig
from routelead.domain.breaker import Breakers
from routelead.inbound import Inbound
from routelead.records.guard import BooksGuard
from routelead.records.ledger import Ledger
from routelead.router import RouterParts
from routelead.state.memory import (
    MemoryBuyerStats,
    MemoryCapStore,
    MemoryDedupeStore,
    MemoryIdempotencyStore,
    MemoryRotationStore,
    MemorySuppressionStore,
    MemoryVolumeStore,
)
from routelead.state.ports import (
    BuyerStats,
    CapStore,
    DedupeStore,
    IdempotencyStore,
    RotationStore,
    StateMetrics,
    SuppressionStore,
    VolumeStore,
)
from routelead.state.quotes import MemoryQuoteLimiter, MemoryQuoteStore, QuoteLimiter, QuoteStore
from routelead.telemetry.metrics import PrometheusBooksCounters, PrometheusStateCounters
from routelead.transport import Transport
from routelead.v1 import routelead_pb2 as pb

log = structlog.get_logger("routelead.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RouteLead"].full_name


class Service:
    """The whole running service: transport, stores, router and gRPC server.

    Built whole: every part is given here (api/app.py builds them for `serve`; tests pass what
    they need and the rest are this process's memory), and the router is built with them."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        address: str = "127.0.0.1:0",
        caps: CapStore | None = None,
        dedupe: DedupeStore | None = None,
        idempotency: IdempotencyStore | None = None,
        rotation: RotationStore | None = None,
        volume: VolumeStore | None = None,
        security: Security | None = None,
        reuse_port: bool = False,
        health_address: str | None = None,
        max_in_flight: int = 0,
        clock: Callable[[], float] = time.time,
        ledger: Ledger | None = None,
        extra_services: Sequence[Callable[[grpc.aio.Server], str]] = (),
        stats: BuyerStats | None = None,
        quotes: QuoteStore | None = None,
        quote_limits: QuoteLimiter | None = None,
        suppression: SuppressionStore | None = None,
        books_spool: Path | None = None,
        breakers: Breakers | None = None,
    ) -> None:
        self.config = config
        self.address = address
        self.security = security if security is not None else Security()
        # `serve --workers N`: every worker binds the same port, the kernel spreads connections.
        self.reuse_port = reuse_port
        # A plaintext, health-only listener for kubelet's gRPC probes (they cannot speak TLS).
        self.health_address = health_address
        self.health_port = 0
        self._health_server: grpc.aio.Server | None = None
        # Admission control: past this many calls in flight, new ones are refused at once with
        # RESOURCE_EXHAUSTED (nothing routed: the caller may send the same lead_id to another replica;
        # routelead_client does not retry it by itself) instead of queueing behind the
        # event loop and answering after their deadline. Probes use the health listener, unlimited.
        self.max_in_flight = max_in_flight
        exported = StateMetrics(export=PrometheusStateCounters())
        self.caps = caps if caps is not None else MemoryCapStore(exported)
        self.dedupe = dedupe if dedupe is not None else MemoryDedupeStore()
        self.idempotency = idempotency if idempotency is not None else MemoryIdempotencyStore()
        self.rotation = rotation if rotation is not None else MemoryRotationStore()
        self.volume = volume if volume is not None else MemoryVolumeStore()
        # Inbound quotes (Quote / Commit) and each source's quote limits.
        self.quotes = quotes if quotes is not None else MemoryQuoteStore(clock=clock)
        self.quote_limits = quote_limits if quote_limits is not None else MemoryQuoteLimiter()
        # Global and per-buyer suppression lists, checked before any ping.
        self.suppression = suppression if suppression is not None else MemorySuppressionStore()
        self.ledger = ledger
        # Each adds a servicer (e.g. Admin) to the server and returns its full service name.
        self.extra_services = extra_services
        self.transport = Transport(verify_tls=config.verify_buyer_tls)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        # The books fail closed (records/guard.py): readiness follows them, a late-booked answer
        # reaches the idempotency store, and what is refused until shutdown goes to `books_spool`
        # for the next start.
        books = (
            BooksGuard(
                ledger,
                intents=ledger,
                on_booked=self.idempotency.remember,
                on_writable=self._books_writable,
                spool=books_spool,
                counters=PrometheusBooksCounters(),
            )
            if ledger is not None
            else None
        )
        self.router = Inbound(
            RouterParts(
                config,
                self.transport,
                TracedCapStore(self.caps),
                self.dedupe,
                self.idempotency,
                self.rotation,
                # Post-accept rates for the expected-revenue ranking: the books' (api/app.py) or
                # this process's own.
                stats if stats is not None else MemoryBuyerStats(),
                self.volume,
                clock,
                books,
                self.suppression,
                breakers if breakers is not None else Breakers(),
                self.quotes,
                self.quote_limits,
                ledger,
            )
        )

    def use_config(self, config: RuntimeConfig) -> None:
        """A new configuration version goes live: leads already in flight finish on the old one."""
        self.config = config
        self.router.config = config

    @property
    def drain_s(self) -> float:
        """Long enough for any in-flight lead to finish: the longest deadline plus a margin."""
        return max(f.deadline_s for f in self.config.flows.values()) + 1.0

    async def start(self) -> int:
        await self.transport.start()
        size = self.config.max_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", 4 * size),
                # One process owns its port unless `serve --workers` asks otherwise.
                ("grpc.so_reuseport", int(self.reuse_port)),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
            interceptors=self.security.interceptors(),
            maximum_concurrent_rpcs=self.max_in_flight or None,
        )
        server.add_generic_rpc_handlers((_route_lead_handler(RouteLeadServicer(self.router)),))
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
        if self.security.tls:
            self.port = server.add_secure_port(self.address, self.security.server_credentials())
        else:
            self.port = server.add_insecure_port(self.address)
        if self.port == 0:
            await self.transport.close()
            raise OSError(f"cannot listen on {self.address}")
        if self.health_address:
            self._health_server = grpc.aio.server(options=[("grpc.so_reuseport", int(self.reuse_port))])
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(self.health_address)
            if self.health_port == 0:
                await self.transport.close()
                raise OSError(f"cannot listen on {self.health_address}")
            await self._health_server.start()
        await server.start()
        self._server = server
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "server.started",
            address=self.address,
            port=self.port,
            tls=self.security.tls,
            auth="mtls" if self.security.client_ca else "token" if self.security.token_digests else "none",
            health_port=self.health_port or None,
            config_version=self.config.version,
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new leads, let in-flight ones finish (bounded by `grace`), then close."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.drain_s if grace is None else grace)
        self._server = None
        if self._health_server is not None:
            await self._health_server.stop(0)
            self._health_server = None
        await self.transport.close()
        if self.router.books is not None:
            await self.router.books.close()  # held records: a last try, or an error line each
        log.info("server.stopped", port=self.port)

    async def _books_writable(self, writable: bool) -> None:
        """Readiness (the RouteLead service's status) follows the books: while they refuse writes
        no lead can be sold here. Liveness ("") stays SERVING: a restart would drop held records."""
        if self._server is None:
            return  # shutting down: the health status says so already
        status = health_pb2.HealthCheckResponse
        await self._health.set(SERVICE_NAME, status.SERVING if writable else status.NOT_SERVING)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _route_lead_handler(servicer: RouteLeadServicer) -> grpc.GenericRpcHandler:
    """The generated registration, except that a request which does not decode (for instance
    invalid UTF-8 in a string, sent by a non-Python client) gets INVALID_ARGUMENT saying so,
    instead of gRPC's generic INTERNAL."""

    def method(name: str, request_type: Any, call: Any, serialize: Any) -> grpc.RpcMethodHandler:
        def decode(data: bytes) -> Any:
            try:
                return request_type.FromString(data)
            except DecodeError:
                return None

        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if request is None:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request is not a valid {request_type.DESCRIPTOR.full_name} (strings must be UTF-8)",
                )
            return await call(request, context)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=decode, response_serializer=serialize
        )

    handlers = {
        "RouteLead": method(
            "RouteLead", pb.RouteLeadRequest, servicer.RouteLead, pb.RouteLeadResponse.SerializeToString
        ),
        "Quote": method("Quote", pb.QuoteRequest, servicer.Quote, pb.QuoteResponse.SerializeToString),
        "Commit": method("Commit", pb.CommitRequest, servicer.Commit, pb.RouteLeadResponse.SerializeToString),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


async def serve_until_signalled(service: Service) -> None:
    """Run until SIGTERM or SIGINT, then drain."""
    import signal

    from routelead.api.heap import settle_heap
    from routelead.telemetry import loop_lag

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    settle_heap()
    lag = loop_lag.start()
    await stop.wait()
    log.info("server.draining", grace_s=service.drain_s)
    await loop_lag.stop(lag)
    await service.stop()
