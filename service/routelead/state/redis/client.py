"""One Redis connection pool and the stores built on it."""

from __future__ import annotations

from dataclasses import dataclass

from routelead.state.ports import StateCounters, StateMetrics
from routelead.state.redis.bounded import Health
from routelead.state.redis.caps import RedisCapStore
from routelead.state.redis.connection import Client, open_client
from routelead.state.redis.dedupe import RedisDedupeStore
from routelead.state.redis.idempotency import RedisIdempotencyStore
from routelead.state.redis.quotes import RedisQuoteLimiter, RedisQuoteStore
from routelead.state.redis.rotation import RedisRotationStore
from routelead.state.redis.suppression import RedisSuppressionStore
from routelead.state.redis.volume import RedisVolumeStore

# Well inside the 750 ms lead deadline: a Redis that takes longer counts as down for this call.
DEFAULT_OP_TIMEOUT_S = 0.1
# How long a lead's answer stays in Redis for a retry of its lead_id (~0.7 KB for a one-buyer
# answer, ~2.5 KB for ten): Redis memory is this many hours of leads.
DEFAULT_ANSWER_TTL_HOURS = 168.0


@dataclass
class RedisState:
    redis: Client
    caps: RedisCapStore
    dedupe: RedisDedupeStore
    idempotency: RedisIdempotencyStore
    rotation: RedisRotationStore
    metrics: StateMetrics
    volume: RedisVolumeStore
    quotes: RedisQuoteStore
    quote_limits: RedisQuoteLimiter
    suppression: RedisSuppressionStore

    async def close(self) -> None:
        await self.caps.close()
        await self.redis.aclose()


def connect(
    url: str,
    dedupe_secret: bytes,
    op_timeout_s: float | None = None,
    answer_ttl_s: int | None = None,
    *,
    cluster: bool = False,
    counters: StateCounters | None = None,
) -> RedisState:
    """Stores sharing one pool (one per node on a cluster); the client reconnects by itself after
    Redis comes back."""
    if answer_ttl_s is None:
        answer_ttl_s = int(DEFAULT_ANSWER_TTL_HOURS * 3600)
    if op_timeout_s is None:
        op_timeout_s = DEFAULT_OP_TIMEOUT_S
    client = open_client(url, cluster=cluster, op_timeout_s=op_timeout_s)
    metrics = StateMetrics() if counters is None else StateMetrics(export=counters)
    health = Health(op_timeout_s, metrics)
    return RedisState(
        client,
        RedisCapStore(client, health),
        RedisDedupeStore(client, health, dedupe_secret),
        RedisIdempotencyStore(client, health, result_ttl_s=answer_ttl_s),
        RedisRotationStore(client, health),
        metrics,
        RedisVolumeStore(client, health),
        RedisQuoteStore(client, health),
        RedisQuoteLimiter(client, health),
        RedisSuppressionStore(client, health),
    )
