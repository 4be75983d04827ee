"""The asyncio client (grpc.aio)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Self

import grpc
from routelead.v1 import routelead_pb2 as pb
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from routelead_client.errors import error_for, inbound_error_for
from routelead_client.models import QuoteResult, RouteResult, from_proto, quote_from_proto
from routelead_client.policy import (
    DEFAULT_TIMEOUT_S,
    RetryPolicy,
    auth_metadata,
    build_request,
    channel_options,
    new_lead_id,
)


class AsyncRouteLeadClient:
    """One channel to `target` (e.g. `dns:///routelead.ns.svc:50051` or `127.0.0.1:50051`).

    Use as `async with AsyncRouteLeadClient(target) as client: await client.route(...)`.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        options: Mapping[str, int | str] | None = None,
    ) -> None:
        self.target = target
        # Sent as `authorization: Bearer <token>` on every call; pair it with TLS credentials off loopback.
        self._metadata = auth_metadata(token)
        self.timeout_s = timeout_s
        self.retry = retry if retry is not None else RetryPolicy()
        opts = channel_options(options)
        self._channel = (
            grpc.aio.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else grpc.aio.insecure_channel(target, options=opts)
        )
        self._stub = pb_grpc.RouteLeadStub(self._channel)

    async def route(
        self,
        flow: str,
        source_id: str,
        fields: Mapping[str, str],
        *,
        lead_id: str | None = None,
        test: bool = False,
        timeout_s: float | None = None,
    ) -> RouteResult:
        """Route one lead. `timeout_s` bounds the whole call, retries included.

        Without a lead_id one is generated once, so every retry carries the same idempotency key.
        """
        key = lead_id or new_lead_id()
        request = build_request(flow, source_id, fields, key, test)
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                reply = await self._stub.RouteLead(
                    request, timeout=max(remaining, 0.001), metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                pause = self.retry.backoff(attempt)
                if (
                    not self.retry.retryable(code)
                    or attempt >= self.retry.max_attempts
                    or time.monotonic() + pause >= deadline
                ):
                    raise error_for(code, exc.details() or "", key, attempt) from None
                await asyncio.sleep(pause)
                continue
            return from_proto(reply, attempt)

    async def quote(
        self, flow: str, source_id: str, fields: Mapping[str, str], *, timeout_s: float | None = None
    ) -> QuoteResult:
        """Ask what RouteLead pays for a lead, from its ping fields (no PII). RESOURCE_EXHAUSTED
        (a quote limit) raises RateLimited with the server's `retry_after_s`; never retried here."""
        request = pb.QuoteRequest(source_id=source_id, flow=flow, fields=dict(fields))
        reply = await self._inbound(self._stub.Quote, request, "", timeout_s, retry=False)
        assert isinstance(reply, pb.QuoteResponse)
        return quote_from_proto(reply)

    async def commit(
        self, quote_id: str, fields: Mapping[str, str], *, timeout_s: float | None = None
    ) -> RouteResult:
        """Sell a quoted lead: the full lead (PII included) for `quote_id`. Retried on UNAVAILABLE
        like `route`: a repeated commit is answered from the first, never sold twice."""
        request = pb.CommitRequest(quote_id=quote_id, fields=dict(fields))
        reply = await self._inbound(self._stub.Commit, request, quote_id, timeout_s, retry=True)
        assert isinstance(reply, pb.RouteLeadResponse)
        return from_proto(reply)

    async def _inbound(
        self, call: Any, request: Any, key: str, timeout_s: float | None, *, retry: bool
    ) -> Any:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call(
                    request, timeout=max(deadline - time.monotonic(), 0.001), metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                pause = self.retry.backoff(attempt)
                if (
                    not retry
                    or not self.retry.retryable(exc.code())
                    or attempt >= self.retry.max_attempts
                    or time.monotonic() + pause >= deadline
                ):
                    raise inbound_error_for(exc, key, attempt) from None
                await asyncio.sleep(pause)

    async def wait_ready(self, timeout_s: float = 5.0) -> None:
        """Wait until the channel connects (or raise TimeoutError)."""
        async with asyncio.timeout(timeout_s):
            await self._channel.channel_ready()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
