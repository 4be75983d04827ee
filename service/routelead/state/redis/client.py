"""One Redis connection pool and the stores built on it."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from routelead.state.ports import StateCounters, StateMetrics
from routelead.state.redis.bounded import Health
from routelead.state.redis.caps import RedisCapStore
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
    redis: aioredis.Redis
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
    counters: StateCounters | None = None,
) -> RedisState:
    """Stores sharing one pool; the client reconnects by itself after Redis comes back."""
    if answer_ttl_s is None:
        answer_ttl_s = int(DEFAULT_ANSWER_TTL_HOURS * 3600)
    if op_timeout_s is None:
        op_timeout_s = DEFAULT_OP_TIMEOUT_S
    client = aioredis.Redis.from_url(
        url,
        socket_timeout=op_timeout_s,
        socket_connect_timeout=op_timeout_s,
        # One immediate retry on a fresh connection: a pooled connection may have died with a
        # restarted Redis. Each call stays bounded by Health.call's timeout regardless.
        retry=Retry(NoBackoff(), 1),
        health_check_interval=10,
    )
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
