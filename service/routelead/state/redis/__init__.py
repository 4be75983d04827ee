"""Shared hot state on Redis: every replica counts, dedupes, rotates and remembers as one."""

from routelead.state.redis.caps import RedisCapStore
from routelead.state.redis.client import RedisState, connect
from routelead.state.redis.dedupe import RedisDedupeStore
from routelead.state.redis.idempotency import RedisIdempotencyStore
from routelead.state.redis.rotation import RedisRotationStore

__all__ = [
    "RedisCapStore",
    "RedisDedupeStore",
    "RedisIdempotencyStore",
    "RedisRotationStore",
    "RedisState",
    "connect",
]
