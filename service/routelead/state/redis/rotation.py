"""Round-robin turns from one INCR: N replicas hand out turns 0, 1, 2, … as one."""

from __future__ import annotations

from routelead.state.memory import MemoryRotationStore
from routelead.state.ports import StateUnavailable
from routelead.state.redis.bounded import Health
from routelead.state.redis.connection import Client


class RedisRotationStore:
    def __init__(self, redis: Client, health: Health) -> None:
        self._redis = redis
        self._health = health
        self._local = MemoryRotationStore()

    async def next_turn(self, key: str) -> int:
        try:
            # One INCR on one key: on a cluster each tier's counter lives wherever it hashes.
            value = await self._health.call("rotation", lambda: self._redis.incr(f"rl:rot:{key}"))
        except StateUnavailable:
            # Rotation is fairness, not safety: a local turn keeps leads flowing while Redis is down.
            self._health.metrics.fallback("rotation")
            return await self._local.next_turn(key)
        return int(value) - 1
