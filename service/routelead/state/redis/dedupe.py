"""Duplicate keys with expiry; SET NX makes "first one wins" atomic across replicas."""

from __future__ import annotations

from routelead.domain.identity import fingerprint
from routelead.state.redis.bounded import Health
from routelead.state.redis.connection import Client


class RedisDedupeStore:
    def __init__(self, redis: Client, health: Health, secret: bytes) -> None:
        self._redis = redis
        self._health = health
        self._secret = secret

    def fingerprint(self, values: list[str]) -> str:
        return fingerprint(self._secret, values)

    async def seen_or_add(self, key: str, ttl_s: float, *, add: bool) -> bool:
        # Keys span buyers and every call is one key: untagged, so on a cluster duplicate keys
        # spread over all masters by their digest instead of piling onto one.
        k = f"rl:dd:{key}"
        if not add:
            return bool(await self._health.call("dedupe.exists", lambda: self._redis.exists(k)))
        created = await self._health.call(
            "dedupe.add", lambda: self._redis.set(k, b"1", nx=True, px=max(1, int(ttl_s * 1000)))
        )
        return not created
