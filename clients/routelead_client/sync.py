"""The blocking client (grpc sync channel), for scripts and threaded services."""

from __future__ import annotations

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


class RouteLeadClient:
    """Blocking twin of AsyncRouteLeadClient; safe to share between threads."""

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
            grpc.secure_channel(target, credentials, options=opts)
            if credentials is not None
            else grpc.insecure_channel(target, options=opts)
        )
        self._stub = pb_grpc.RouteLeadStub(self._channel)

    def route(
        self,
        flow: str,
        source_id: str,
        fields: Mapping[str, str],
        *,
        lead_id: str | None = None,
        test: bool = False,
        timeout_s: float | None = None,
    ) -> RouteResult:
        """Route one lead; see AsyncRouteLeadClient.route."""
        key = lead_id or new_lead_id()
        request = build_request(flow, source_id, fields, key, test)
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                reply = self._stub.RouteLead(request, timeout=max(remaining, 0.001), metadata=self._metadata)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
                pause = self.retry.backoff(attempt)
                if (
                    not self.retry.retryable(code)
                    or attempt >= self.retry.max_attempts
                    or time.monotonic() + pause >= deadline
                ):
                    raise error_for(code, details or "", key, attempt) from None
                time.sleep(pause)
                continue
            return from_proto(reply, attempt)

    def quote(
        self, flow: str, source_id: str, fields: Mapping[str, str], *, timeout_s: float | None = None
    ) -> QuoteResult:
        """Ask what RouteLead pays for a lead, from its ping fields (no PII). RESOURCE_EXHAUSTED
        (a quote limit) raises RateLimited with the server's `retry_after_s`; never retried here."""
        request = pb.QuoteRequest(source_id=source_id, flow=flow, fields=dict(fields))
        reply = self._inbound(self._stub.Quote, request, "", timeout_s, retry=False)
        assert isinstance(reply, pb.QuoteResponse)
        return quote_from_proto(reply)

    def commit(
        self, quote_id: str, fields: Mapping[str, str], *, timeout_s: float | None = None
    ) -> RouteResult:
        """Sell a quoted lead: the full lead (PII included) for `quote_id`. Retried on UNAVAILABLE
        like `route`: a repeated commit is answered from the first, never sold twice."""
        request = pb.CommitRequest(quote_id=quote_id, fields=dict(fields))
        reply = self._inbound(self._stub.Commit, request, quote_id, timeout_s, retry=True)
        assert isinstance(reply, pb.RouteLeadResponse)
        return from_proto(reply)

    def _inbound(self, call: Any, request: Any, key: str, timeout_s: float | None, *, retry: bool) -> Any:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        attempt = 0
        while True:
            attempt += 1
            try:
                return call(request, timeout=max(deadline - time.monotonic(), 0.001), metadata=self._metadata)
            except grpc.RpcError as exc:
                pause = self.retry.backoff(attempt)
                if (
                    not retry
                    or not self.retry.retryable(exc.code())
                    or attempt >= self.retry.max_attempts
                    or time.monotonic() + pause >= deadline
                ):
                    raise inbound_error_for(exc, key, attempt) from None
                time.sleep(pause)

    def wait_ready(self, timeout_s: float = 5.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
