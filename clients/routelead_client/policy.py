"""What both clients share and do without I/O: requests, retry timing, channel options."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from routelead.v1 import routelead_pb2 as pb

DEFAULT_TIMEOUT_S = 1.0
# Round-robin over every address the resolver returns: with `dns:///name.ns.svc:50051` on a headless
# Kubernetes Service that is every ready pod, so load spreads per call rather than per connection.
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry only UNAVAILABLE (nothing was answered), with the same lead_id, inside the one deadline.

    The service treats lead_id as an idempotency key, so a retry after a lost answer returns the first
    routing (replayed=True) instead of selling the lead twice.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.02
    max_backoff_s: float = 0.25
    multiplier: float = 2.0

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Full-jitter exponential backoff before retry number `retry` (1-based)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return (rng or random).uniform(0, ceiling)

    def retryable(self, code: grpc.StatusCode) -> bool:
        return code is grpc.StatusCode.UNAVAILABLE


NO_RETRY = RetryPolicy(max_attempts=1)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


def new_lead_id() -> str:
    return uuid.uuid4().hex


def build_request(
    flow: str, source_id: str, fields: Mapping[str, str], lead_id: str, test: bool
) -> pb.RouteLeadRequest:
    return pb.RouteLeadRequest(
        lead_id=lead_id, flow=flow, source_id=source_id, fields=dict(fields), test=test
    )


def channel_options(extra: Mapping[str, int | str] | None = None) -> list[tuple[str, int | str]]:
    options: dict[str, int | str] = {
        "grpc.service_config": _SERVICE_CONFIG,
        # Re-resolve DNS often enough to see pods come and go.
        "grpc.dns_min_time_between_resolutions_ms": 5_000,
        # gRPC's own transparent retries stay on; ours cover the rest of UNAVAILABLE.
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 10_000,
        "grpc.keepalive_permit_without_calls": 0,
    }
    options.update(extra or {})
    return list(options.items())
