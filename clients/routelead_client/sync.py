"""The blocking client (grpc sync channel), for scripts and threaded services."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Self

import grpc
from routelead.v1 import routelead_pb2_grpc as pb_grpc

from routelead_client.errors import error_for
from routelead_client.models import RouteResult, from_proto
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

    def wait_ready(self, timeout_s: float = 5.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
