"""Volume counters for pricing rules, shared by every replica: one INCR per UTC period key."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from routelead.domain.periods import period_key
from routelead.state.memory import MemoryVolumeStore
from routelead.state.ports import StateUnavailable
from routelead.state.redis.bounded import Health
from routelead.state.redis.connection import Client

PERIODS = MemoryVolumeStore.PERIODS
# Kept a little past the longest period (a month), then Redis drops the key.
TTL_S = 32 * 86400


class RedisVolumeStore:
    def __init__(self, redis: Client, health: Health) -> None:
        self._redis = redis
        self._health = health
        # Pricing is not safety: while Redis is down, this replica's own counts stand in.
        self._local = MemoryVolumeStore()

    @staticmethod
    def _keys(subject: str, now: float) -> list[str]:
        """Untagged: the counters are read and bumped together but never need to agree with each
        other atomically, so on a cluster they spread (and keep the names a single Redis had)."""
        return [f"rl:vol:{subject}:{period_key(p, now, 'UTC')}" for p in PERIODS]

    async def counts(self, subject: str, now: float) -> dict[str, int]:
        keys = self._keys(subject, now)
        # One MGET on a single Redis; on a cluster one MGET per slot, sent together.
        r = self._redis
        read = r.mget_nonatomic if isinstance(r, RedisCluster) else r.mget
        try:
            values = await self._health.call("volume", lambda: read(keys))
        except StateUnavailable:
            self._health.metrics.fallback("volume")
            return await self._local.counts(subject, now)
        return {p: int(v or 0) for p, v in zip(PERIODS, values, strict=True)}

    async def add(self, subject: str, now: float) -> None:
        await self._local.add(subject, now)
        keys = self._keys(subject, now)

        async def bump() -> object:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.incr(key)
                    pipe.expire(key, TTL_S)
                return await pipe.execute()

        try:
            await self._health.call("volume", bump)
        except StateUnavailable:
            self._health.metrics.fallback("volume")
